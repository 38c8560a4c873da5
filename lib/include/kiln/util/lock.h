// Cross-process exclusive locks on lock files (flock(2)).
//
// A FileLock holds an exclusive flock on a file for its lifetime; it blocks
// until the lock is free. flock locks belong to the open file description, so
// two FileLocks on one path exclude each other in one process as well as
// across processes (kilnctl and kilnd on one host). The lock file itself is
// never deleted: deleting it would let two holders lock different inodes.
#pragma once

#include <filesystem>
#include <optional>

#include "kiln/util/fs.h"

namespace kiln {

class FileLock {
 public:
  // Creates `path` (and its directory) if needed and blocks until locked.
  // Throws kiln::Error kLockFailed if the file cannot be opened or locked.
  explicit FileLock(const std::filesystem::path& path);

  // Takes the lock only if it is free right now; nullopt when someone holds it.
  static std::optional<FileLock> try_lock(const std::filesystem::path& path);
  FileLock(FileLock&&) noexcept = default;
  FileLock& operator=(FileLock&&) noexcept = default;
  ~FileLock() = default;  // closing the descriptor releases the lock

 private:
  FileLock(const std::filesystem::path& path, bool wait, bool& locked);

  UniqueFd fd_;
};

}  // namespace kiln
