// Cross-process exclusive locks on lock files (flock(2)).
//
// A FileLock holds an exclusive flock on a file for its lifetime. flock locks
// belong to the open file description, so two FileLocks on one path exclude
// each other in one process as well as across processes (kilnctl and kilnd on
// one host); taking a lock the same process already holds is what
// cache::LeaseTable is for.
//
// A lock file may be deleted, but only by its holder (unlink_locked()): every
// lock taken here re-checks, once locked, that the path still names the inode
// it locked, and starts over if not, so two holders never lock different
// inodes of one name (the idiom oslo.concurrency and flock(1) users follow).
//
// The holder writes its pid into the file, so a waiter that gives up can say
// who held the lock.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "kiln/util/fs.h"

namespace kiln {

class FileLock {
 public:
  // Creates `path` (and its directory) if needed and waits until locked, at
  // most `timeout`. Throws kiln::Error kLockFailed if the file cannot be
  // opened or locked, or when the deadline passes (naming the holder's pid).
  explicit FileLock(const std::filesystem::path& path,
                    std::chrono::milliseconds timeout = std::chrono::hours(1));

  // Takes the lock only if it is free right now; nullopt when someone holds it.
  static std::optional<FileLock> try_lock(const std::filesystem::path& path);

  // As try_lock, but creates and writes nothing: for read-only commands. A
  // lock file that does not exist is held by nobody: the result is engaged
  // with no file behind it.
  static std::optional<FileLock> probe(const std::filesystem::path& path);

  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  ~FileLock() = default;  // closing the descriptor releases the lock

  // Removes the lock file while still holding it (the lock is released when
  // this object goes). Waiters that opened the old file notice and reopen.
  void unlink_locked();

  const std::filesystem::path& path() const { return path_; }

 private:
  FileLock() = default;
  // True when locked; false when `deadline` passed (nullopt: try once).
  bool lock(const std::filesystem::path& path, std::optional<std::chrono::steady_clock::time_point> deadline,
            bool create);

  UniqueFd fd_;
  std::filesystem::path path_;
};

// "pid 1234" from a lock file's contents, or "an unknown process".
std::string lock_holder(const std::filesystem::path& path);

}  // namespace kiln
