// AgentLock: one kilnd per instances_path, and the refusal names the holder.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "agent_lock.h"
#include "assertions.h"
#include "scratch.h"

namespace {

// A child process that holds the lock until the parent closes `release`.
class LockHolder {
 public:
  explicit LockHolder(const std::filesystem::path& lock_file) {
    int ready[2];
    int release[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(release) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(release[1]);
      int status = 0;
      try {
        kilnd::AgentLock lock(lock_file);
        char byte = 'L';
        if (::write(ready[1], &byte, 1) != 1) status = 2;
        char ignored;
        while (::read(release[0], &ignored, 1) > 0) {
        }
      } catch (...) {
        status = 1;
      }
      ::_exit(status);
    }
    ::close(ready[1]);
    ::close(release[0]);
    release_ = release[1];
    char byte = 0;
    bool locked = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    REQUIRE(locked);
  }
  ~LockHolder() {
    if (release_ >= 0) end();
  }
  pid_t pid() const { return pid_; }
  // Lets the child drop the lock and exit; its exit status.
  int end() {
    ::close(release_);
    release_ = -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int release_ = -1;
};

}  // namespace

TEST_CASE("a second agent on the same lock file is refused and told the holder's pid", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  auto lock_file = scratch / "instances/locks/kilnd.lock";
  LockHolder holder(lock_file);
  REQUIRE_KILN_ERROR_MENTIONS(kilnd::AgentLock{lock_file}, kiln::ErrorCode::kAlreadyRunning,
                              lock_file.string() + " is held by kilnd pid " + std::to_string(holder.pid()) +
                                  ": another agent uses this instances_path");
  REQUIRE(holder.end() == 0);
}

TEST_CASE("the lock is free again once its holder exits", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  auto lock_file = scratch / "kilnd.lock";
  {
    LockHolder holder(lock_file);
    REQUIRE(holder.end() == 0);
  }
  kilnd::AgentLock lock(lock_file);
  std::ifstream in(lock_file);
  std::string pid;
  in >> pid;
  REQUIRE(pid == std::to_string(::getpid()));
}

TEST_CASE("the lock is released when the AgentLock is destroyed", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  auto lock_file = scratch / "kilnd.lock";
  {
    kilnd::AgentLock lock(lock_file);
    // flock is per open file description: a second lock in this process fails too.
    REQUIRE_KILN_ERROR(kilnd::AgentLock{lock_file}, kiln::ErrorCode::kAlreadyRunning);
  }
  LockHolder holder(lock_file);  // another process can take it now
  REQUIRE(holder.end() == 0);
}

TEST_CASE("the lock file's directory is created when missing", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  auto lock_file = scratch / "a/b/c/kilnd.lock";
  kilnd::AgentLock lock(lock_file);
  REQUIRE(std::filesystem::is_regular_file(lock_file));
}

TEST_CASE("a lock file that cannot be created is a lock failure, not 'already running'", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "file", "x");
  REQUIRE_KILN_ERROR(kilnd::AgentLock{scratch / "file/kilnd.lock"}, kiln::ErrorCode::kLockFailed);
}

TEST_CASE("the lock's descriptor does not leak into programs kilnd runs", "[agent_lock]") {
  kiln::test::ScratchDir scratch;
  auto lock_file = scratch / "kilnd.lock";
  kilnd::AgentLock lock(lock_file);
  // A child that execs keeps no descriptor (O_CLOEXEC); if it did, the lock
  // would outlive kilnd in a long-running qemu-img.
  std::string command = "ls -l /proc/self/fd | grep -c " + lock_file.string() + " > " + (scratch / "count").string();
  REQUIRE(std::system(command.c_str()) != -1);
  std::ifstream in(scratch / "count");
  std::string count;
  in >> count;
  REQUIRE(count == "0");
}
