#include "kiln/util/lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "kiln/util/error.h"

namespace kiln {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

// Whether `path` still names the inode `fd` has open (false once it was
// unlinked or replaced by the holder we waited for).
bool still_named(int fd, const fs::path& path) {
  struct stat opened {}, named {};
  if (::fstat(fd, &opened) != 0 || ::lstat(path.c_str(), &named) != 0) return false;
  return opened.st_dev == named.st_dev && opened.st_ino == named.st_ino;
}

// Best effort: the pid only serves error messages. Written over the old one
// at a fixed width, never truncated first: on ext4 a file truncated to zero
// and rewritten is flushed at close (auto_da_alloc), milliseconds per lock.
void record_holder(int fd) {
  char pid[32];
  int length = std::snprintf(pid, sizeof pid, "%-20d\n", static_cast<int>(::getpid()));
  (void)!::pwrite(fd, pid, static_cast<std::size_t>(length), 0);
}

}  // namespace

std::string lock_holder(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return "an unknown process";
  UniqueFd owned(fd);
  char text[32] = {};
  ssize_t got = ::pread(fd, text, sizeof text - 1, 0);
  std::string pid = got > 0 ? std::string(text, static_cast<std::size_t>(got)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return "an unknown process";
  return "pid " + pid;
}

FileLock::FileLock(const fs::path& path, std::chrono::milliseconds timeout) {
  if (!lock(path, SteadyClock::now() + timeout, /*create=*/true)) {
    throw Error(ErrorCode::kLockFailed, "gave up waiting " + std::to_string(timeout.count() / 1000) +
                                            " s for lock " + path.string() + ", held by " + lock_holder(path));
  }
}

std::optional<FileLock> FileLock::try_lock(const fs::path& path) {
  FileLock lock;
  if (!lock.lock(path, std::nullopt, /*create=*/true)) return std::nullopt;
  return lock;
}

std::optional<FileLock> FileLock::probe(const fs::path& path) {
  FileLock lock;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return lock;  // nobody holds a lock that has no file
    throw Error(ErrorCode::kLockFailed, "cannot open lock file " + path.string() + ": " + std::strerror(errno));
  }
  lock.fd_ = UniqueFd(fd);
  lock.path_ = path;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return std::nullopt;
  // Unlinked by its holder since we opened it: someone is replacing it, busy.
  if (!still_named(fd, path)) return std::nullopt;
  return lock;
}

bool FileLock::lock(const fs::path& path, std::optional<SteadyClock::time_point> deadline, bool create) {
  path_ = path;
  std::error_code error;
  if (create) fs::create_directories(path.parent_path(), error);
  auto pause = std::chrono::milliseconds(5);
  for (unsigned renamed = 0;; ++renamed) {
    // O_NOFOLLOW: a lock file planted as a symlink must not make kiln create or
    // open the file it points at.
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
      throw Error(ErrorCode::kLockFailed, "cannot open lock file " + path.string() + ": " + std::strerror(errno));
    }
    UniqueFd owned(fd);
    int result;
    do {
      result = ::flock(fd, LOCK_EX | LOCK_NB);
    } while (result != 0 && errno == EINTR);
    if (result != 0 && errno != EWOULDBLOCK) {
      throw Error(ErrorCode::kLockFailed, "cannot lock " + path.string() + ": " + std::strerror(errno));
    }
    if (result == 0) {
      if (!still_named(fd, path)) {  // its holder removed it: lock the new one
        if (renamed < 1000) continue;
        throw Error(ErrorCode::kLockFailed, "the lock file " + path.string() + " keeps being replaced");
      }
      record_holder(fd);
      fd_ = std::move(owned);
      return true;
    }
    if (!deadline || SteadyClock::now() >= *deadline) return false;
    std::this_thread::sleep_for(std::min<SteadyClock::duration>(pause, *deadline - SteadyClock::now()));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

void FileLock::unlink_locked() {
  if (fd_.valid() && still_named(fd_.get(), path_)) ::unlink(path_.c_str());
}

}  // namespace kiln
