// Running helper programs (qemu-img, mkswap) safely.
//
// run() executes argv directly (no shell, so no quoting bugs), with LC_ALL=C
// so that messages are parseable, stdin from /dev/null, stdout and stderr
// captured (bounded), optional resource limits applied in the child before
// exec (as Nova wraps qemu-img in prlimit), and a wall-clock timeout after
// which the child is killed. Thread-safe: each call owns its child.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

struct ResourceLimits {
  std::optional<std::uint64_t> address_space_bytes;  // RLIMIT_AS
  std::optional<std::uint64_t> cpu_seconds;          // RLIMIT_CPU
};

struct Command {
  Command(std::vector<std::string> argv_, ResourceLimits limits_ = {},
          std::chrono::milliseconds timeout_ = std::chrono::minutes(10))
      : argv(std::move(argv_)), limits(limits_), timeout(timeout_) {}

  std::vector<std::string> argv;  // argv[0] is looked up on PATH
  ResourceLimits limits;
  std::chrono::milliseconds timeout;
};

struct CommandResult {
  int exit_code = -1;    // exit status, or 128 + signal number when killed
  bool timed_out = false;
  std::string out;       // first kMaxCapture bytes of stdout
  std::string err;       // first kMaxCapture bytes of stderr
};

inline constexpr std::size_t kMaxCapture = 64 * 1024;

// Runs the command to completion. Throws kiln::Error kSubprocessFailed only
// when the program cannot be started; a non-zero exit is reported in the result.
CommandResult run(const Command& command);

// Runs the command and throws kiln::Error kSubprocessFailed (with the
// program's stderr) unless it exited 0 in time. Returns its stdout.
std::string run_checked(const Command& command);

// "qemu-img convert -f qcow2 ..." for messages.
std::string describe(const std::vector<std::string>& argv);

}  // namespace kiln
