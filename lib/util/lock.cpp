#include "kiln/util/lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <cstring>

#include "kiln/util/error.h"

namespace kiln {

FileLock::FileLock(const std::filesystem::path& path) {
  bool locked = false;
  *this = FileLock(path, /*wait=*/true, locked);
}

std::optional<FileLock> FileLock::try_lock(const std::filesystem::path& path) {
  bool locked = false;
  FileLock lock(path, /*wait=*/false, locked);
  if (!locked) return std::nullopt;
  return lock;
}

FileLock::FileLock(const std::filesystem::path& path, bool wait, bool& locked) {
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  // O_NOFOLLOW: a lock file planted as a symlink must not make kiln create or
  // open the file it points at.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    throw Error(ErrorCode::kLockFailed,
                "cannot open lock file " + path.string() + ": " + std::strerror(errno));
  }
  fd_ = UniqueFd(fd);
  int result;
  do {
    result = ::flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB);
  } while (result != 0 && errno == EINTR);
  if (result != 0 && !wait && errno == EWOULDBLOCK) return;
  locked = result == 0;
  if (result != 0) {
    throw Error(ErrorCode::kLockFailed, "cannot lock " + path.string() + ": " + std::strerror(errno));
  }
}

}  // namespace kiln
