#include "kiln/util/lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <cstring>

#include "kiln/util/error.h"

namespace kiln {

FileLock::FileLock(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::create_directories(path.parent_path(), error);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(ErrorCode::kLockFailed,
                "cannot open lock file " + path.string() + ": " + std::strerror(errno));
  }
  fd_ = UniqueFd(fd);
  int result;
  do {
    result = ::flock(fd, LOCK_EX);
  } while (result != 0 && errno == EINTR);
  if (result != 0) {
    throw Error(ErrorCode::kLockFailed, "cannot lock " + path.string() + ": " + std::strerror(errno));
  }
}

}  // namespace kiln
