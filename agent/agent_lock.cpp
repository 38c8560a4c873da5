#include "agent_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "kiln/util/error.h"

namespace kilnd {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_lock_failed(const std::string& what, int errno_value) {
  throw kiln::Error(kiln::ErrorCode::kLockFailed, what + ": " + std::strerror(errno_value));
}

// The pid the holder wrote, or "unknown": the holder writes it just after
// locking, so a reader can race it.
std::string holder_pid(int fd) {
  char buffer[32] = {};
  ssize_t count = ::pread(fd, buffer, sizeof buffer - 1, 0);
  if (count <= 0) return "unknown";
  std::string text(buffer, static_cast<std::size_t>(count));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return "unknown";
  return text;
}

}  // namespace

AgentLock::AgentLock(const fs::path& lock_file) {
  std::error_code error;
  fs::create_directories(lock_file.parent_path(), error);
  if (error) {
    throw kiln::Error(kiln::ErrorCode::kLockFailed,
                      "cannot create " + lock_file.parent_path().string() + ": " + error.message());
  }
  int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) throw_lock_failed("cannot open lock file " + lock_file.string(), errno);
  kiln::UniqueFd file(fd);

  int result;
  do {
    result = ::flock(file.get(), LOCK_EX | LOCK_NB);
  } while (result != 0 && errno == EINTR);
  if (result != 0) {
    if (errno == EWOULDBLOCK) {
      throw kiln::Error(kiln::ErrorCode::kAlreadyRunning,
                        lock_file.string() + " is held by kilnd pid " + holder_pid(file.get()) +
                            ": another agent uses this instances_path");
    }
    throw_lock_failed("cannot lock " + lock_file.string(), errno);
  }

  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(file.get(), 0) != 0) throw_lock_failed("cannot truncate " + lock_file.string(), errno);
  if (::pwrite(file.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    throw_lock_failed("cannot write the pid into " + lock_file.string(), errno);
  }
  fd_ = std::move(file);
}

AgentLock::~AgentLock() {
  // A pid left behind would only mislead a human reading the file; the lock
  // itself goes with the descriptor either way.
  if (fd_.valid()) (void)::ftruncate(fd_.get(), 0);
}

}  // namespace kilnd
