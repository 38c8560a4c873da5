// Long work (boot, delete, pre-cache) as operations: queued on a bounded
// worker pool, observable while they run, remembered after they end and
// across restarts.
//
// An Operation is what GET /v1/operations/{id} shows: its kind, state
// (queued, running, succeeded, failed), the current step, bytes done and
// total of a download, the error's code and message or the result. The
// OperationRunner runs at most `workers` operations at once (nova's
// max_concurrent_builds); more wait in a queue of bounded length, beyond
// which submit() refuses with kOverloaded. drain() stops taking work and
// waits for what runs; queued operations that had not started fail with
// shutting_down. Thread-safe throughout.
//
// Every operation is written to the OperationJournal when it is accepted
// (before submit() returns its id) and when it finishes (before it shows as
// finished), so what a caller has seen survives a restart. A new runner on
// the same journal restores the operations; those that had not finished fail
// with kInterrupted (kilnd stopped under them; the start's reconcile cleans
// what they left, and asking again runs them anew).
//
// Retention: finished operations are forgotten oldest first, and only to make
// room under RetentionPolicy::max_operations, never one that finished less
// than RetentionPolicy::minimum_age ago; unfinished ones are never forgotten.
// When the bound is full of operations too young to forget, submit() refuses
// with kOverloaded. Memory holds at most that many operations (and their
// by-uuid entries, which go with them), the journal at most twice as many
// lines plus kCompactionSlack; a boot's body is kept only as its digest.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/rpc/metrics.h"
#include "kiln/util/error.h"

namespace boost::asio {
class thread_pool;
}

namespace kiln::rpc {

class OperationJournal;

enum class OperationState { kQueued, kRunning, kSucceeded, kFailed };
std::string state_name(OperationState state);

// What a caller asks for besides the kind: kept with the operation.
struct OperationRequest {
  std::string kind;      // boot, delete, precache
  std::string uuid;      // the instance, "" for a pre-cache
  std::string image_id;  // "" for a delete
  nlohmann::json metadata;     // shown with the operation; null for none
  std::string request_digest;  // sha256 of the validated body (boots), "" for none
};

class Operation {
 public:
  Operation(std::uint64_t seq, std::string id, OperationRequest request);

  const std::string& id() const { return id_; }
  const std::string& kind() const { return request_.kind; }
  const std::string& uuid() const { return request_.uuid; }
  const std::string& image_id() const { return request_.image_id; }
  const std::string& request_digest() const { return request_.request_digest; }
  // Order of acceptance on this host (kept across restarts): a larger seq was accepted later.
  std::uint64_t seq() const { return seq_; }

  OperationState state() const;
  bool finished() const;
  std::optional<std::chrono::system_clock::time_point> finished_at() const;
  void set_step(const std::string& step);
  void set_bytes(std::uint64_t done, std::optional<std::uint64_t> total);

  // Calls `wake` once when the operation finishes, from the thread that
  // finishes it, as long as the returned handle lives; when it has already
  // finished, calls `wake` at once and returns null.
  std::shared_ptr<void> when_finished(std::function<void()> wake) const;

  // What GET /v1/operations/{id} shows.
  nlohmann::json to_json() const;
  // The journal's line: to_json() plus "seq" and "request_sha256".
  nlohmann::json record() const;

 private:
  friend class OperationRunner;
  // How an operation ended.
  struct Outcome {
    OperationState state = OperationState::kFailed;  // kSucceeded or kFailed
    nlohmann::json result;
    std::optional<std::pair<std::string, std::string>> error;  // code name, message
    std::chrono::system_clock::time_point at;
  };
  static Outcome success(nlohmann::json result);
  static Outcome failure(ErrorCode code, const std::string& message);
  // A journal record back as an operation; nullptr when it does not describe one.
  static std::shared_ptr<Operation> restore(const nlohmann::json& record);

  void mark_running();
  // The record as it will read once `outcome` is applied, for the journal first.
  nlohmann::json record_with(const Outcome& outcome) const;
  void finish(Outcome outcome);
  nlohmann::json render(const Outcome* pending) const;  // REQUIRES: mutex_ held

  const std::uint64_t seq_;
  const std::string id_;
  const OperationRequest request_;
  mutable std::mutex mutex_;
  // Who waits without a thread (long polls); expired ones are dropped as new ones come.
  mutable std::vector<std::weak_ptr<std::function<void()>>> watchers_;
  OperationState state_ = OperationState::kQueued;
  std::string step_ = "queued";
  std::uint64_t bytes_done_ = 0;
  std::optional<std::uint64_t> bytes_total_;
  std::optional<std::pair<std::string, std::string>> error_;
  nlohmann::json result_;
  std::chrono::system_clock::time_point created_at_, started_at_, finished_at_;
};

// What an operation does; returns its result, throws kiln::Error on failure.
using OperationWork = std::function<nlohmann::json(Operation&)>;

// How long and how many finished operations are remembered ([rpc]
// operation_retention_seconds, max_retained_operations).
struct RetentionPolicy {
  std::chrono::seconds minimum_age{3600};
  std::size_t max_operations = 10000;  // finished and unfinished together
};

class OperationRunner {
 public:
  // Opens (or creates) the journal at `journal` and restores what it holds;
  // throws kIoError when it cannot be read or written.
  OperationRunner(unsigned workers, Metrics& metrics, const std::filesystem::path& journal,
                  RetentionPolicy retention, std::size_t max_queued = 1024);
  ~OperationRunner();  // waits for running operations
  OperationRunner(const OperationRunner&) = delete;
  OperationRunner& operator=(const OperationRunner&) = delete;

  // Creates an operation, journals it and queues `work`. Throws kShuttingDown
  // after drain(), kOverloaded when the queue is full or the retention bound
  // holds only operations too young to forget, kIoError (or
  // kInsufficientSpace) when the journal cannot record it.
  std::shared_ptr<Operation> submit(OperationRequest request, OperationWork work);
  std::shared_ptr<Operation> find(const std::string& id) const;
  // The operation of `kind` on instance `uuid` accepted last, if retained.
  std::shared_ptr<Operation> latest(const std::string& kind, const std::string& uuid) const;

  // Applies to the next submit() (SIGHUP).
  void set_retention(RetentionPolicy retention);

  // Stops taking work; waits up to `timeout` for running operations.
  // Returns true when nothing runs any more.
  bool drain(std::chrono::milliseconds timeout);
  bool draining() const;
  std::size_t unfinished() const;
  std::size_t retained() const;
  std::size_t forgotten() const;  // since start, by retention

 private:
  void restore();
  void run(const std::shared_ptr<Operation>& operation, const OperationWork& work);
  void index(const std::shared_ptr<Operation>& operation);  // REQUIRES: mutex_ held
  void forget_oldest();                                     // REQUIRES: mutex_ held, finished_ not empty

  Metrics& metrics_;
  const std::size_t max_queued_;
  std::unique_ptr<OperationJournal> journal_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  RetentionPolicy retention_;
  std::unordered_map<std::string, std::shared_ptr<Operation>> operations_;  // by id
  std::deque<std::shared_ptr<Operation>> finished_;  // in the order they finished: the next to forget first
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Operation>> latest_;  // (kind, uuid) -> newest
  std::uint64_t next_seq_ = 1;
  std::size_t unfinished_ = 0;
  std::size_t forgotten_ = 0;
  bool draining_ = false;
  std::unique_ptr<boost::asio::thread_pool> pool_;  // last: joined first, while the rest still exists
};

// A fresh random id such as "op-3f2a…" (128 bits from the system's CSPRNG).
std::string new_operation_id();

}  // namespace kiln::rpc
