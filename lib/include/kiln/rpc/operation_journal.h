// The operations journal: what kilnd remembers of its operations across a
// restart, in one append-only file, <instances_path>/operations.log.
//
// The file is JSON Lines an operator can read with grep and jq: every line is
// one operation as GET /v1/operations/{id} shows it, plus "seq" (its order of
// acceptance) and, for boots, "request_sha256" (the digest of the validated
// body, for idempotency; the body itself is never kept). A line is written
// when an operation is accepted and when it finishes; the last line of an id
// is its latest state. append() returns once the line is on disk (fdatasync;
// concurrent appenders share one), so an id kilnd has answered is never lost,
// not even to a power cut.
//
// Reading tolerates what a crash or a bad disk leaves: a last line without
// its newline (a torn append) is ignored, and a line that is not a JSON
// operation record is skipped and counted, never fatal. A line whose write
// failed half-way is cut off again before the next append. The file is
// compacted (the latest line of every id not forgotten, written to
// operations.log.tmp, fsync'd and renamed over it) when its owner asks, as
// kilnd does at every start, and whenever it holds more than twice the live
// operations plus kCompactionSlack lines, so its size stays bounded by what
// the owner retains.
//
// One journal per file: the caller holds the agent's lock on instances_path.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/util/fs.h"
#include "kiln/util/layout.h"

namespace kiln::rpc {

inline constexpr std::string_view kOperationJournalName = layout::kOperationJournal;
// Lines beyond twice the live operations that may pile up before a compaction.
inline constexpr std::size_t kCompactionSlack = 1024;

class OperationJournal {
 public:
  // What the file held when it was opened.
  struct Contents {
    std::vector<nlohmann::json> records;  // the latest record of each id, in order of first appearance
    std::size_t skipped_lines = 0;        // lines that were not operation records
    bool torn_tail = false;               // the file ended inside a line
  };

  // Opens `path` (creating it and its directory) and reads it; a torn last
  // line is cut off. Throws kIoError when the file cannot be read or written.
  explicit OperationJournal(std::filesystem::path path);
  OperationJournal(const OperationJournal&) = delete;
  OperationJournal& operator=(const OperationJournal&) = delete;

  // The contents found at opening; REQUIRES: called once (they are moved out).
  Contents take_contents();

  // Appends `record` (an object with a string "id") as one line and returns
  // once it is durable. Throws kIoError/kInsufficientSpace when it could not
  // be written; the file is then as before the call.
  void append(const nlohmann::json& record);

  // The caller no longer retains `id`: its lines go at the next compaction.
  void forget(const std::string& id);

  // Rewrites the file now with the latest line of every live id.
  void compact();

  // Replaces the file with exactly `records` (what the owner restored, as it
  // stands now); their ids are the live ones from now on.
  void rewrite(const std::vector<nlohmann::json>& records);

  const std::filesystem::path& path() const { return path_; }
  std::size_t lines() const;       // complete lines in the file now
  std::size_t compactions() const;  // since opening, the one at opening included

 private:
  // Where the latest line of a live id is in the file, and when the id first appeared.
  struct Line {
    std::uint64_t order = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
  };
  void open_for_append();
  void compact_locked(std::unique_lock<std::mutex>& lock);

  const std::filesystem::path path_;
  mutable std::mutex mutex_;
  std::condition_variable synced_changed_;
  UniqueFd fd_;
  Contents contents_;
  // Compaction copies these lines (pread) into the new file one by one: it
  // never holds the whole file, whose size follows the metadata callers send.
  std::unordered_map<std::string, Line> live_;
  std::uint64_t next_order_ = 0;
  std::uint64_t size_ = 0;     // bytes of complete lines in the file
  std::size_t lines_ = 0;
  std::size_t compactions_ = 0;
  std::uint64_t written_ = 0;  // appends written (a sequence for the shared fdatasync)
  std::uint64_t synced_ = 0;   // appends known durable
  bool syncing_ = false;       // an appender is in fdatasync without the mutex
};

}  // namespace kiln::rpc
