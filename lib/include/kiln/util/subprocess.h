// Running helper programs (qemu-img, mkswap) safely.
//
// run() executes argv directly (no shell, so no quoting bugs), with LC_ALL=C
// so that messages are parseable, stdin from /dev/null, stdout and stderr
// captured (bounded), optional resource limits applied in the child before
// exec (as Nova wraps qemu-img in prlimit), and a wall-clock timeout after
// which the child is killed. Thread-safe: each call owns its child.
//
// Every child inherits no descriptor of kiln's but its stdio (close_range in
// the child: a Glance socket or a lock must not leak into qemu-img), and gets
// PR_SET_PDEATHSIG(SIGKILL): it dies with the thread that started it, which
// run() blocks until the child is reaped. A Command with a `sandbox` runs
// confined as kiln/util/sandbox.h describes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/util/sandbox.h"

namespace kiln {

struct ResourceLimits {
  std::optional<std::uint64_t> address_space_bytes;  // RLIMIT_AS
  std::optional<std::uint64_t> cpu_seconds;          // RLIMIT_CPU
  std::optional<std::uint64_t> file_size_bytes;      // RLIMIT_FSIZE: no file it writes grows past this
};

struct Command {
  Command(std::vector<std::string> argv_, ResourceLimits limits_ = {},
          std::chrono::milliseconds timeout_ = std::chrono::minutes(10),
          std::optional<Sandbox> sandbox_ = std::nullopt)
      : argv(std::move(argv_)), limits(limits_), timeout(timeout_), sandbox(std::move(sandbox_)) {}

  std::vector<std::string> argv;  // argv[0] is looked up on PATH
  ResourceLimits limits;
  std::chrono::milliseconds timeout;
  std::optional<Sandbox> sandbox;  // confine the program (argv then names files as the sandbox shows them)
};

struct CommandResult {
  int exit_code = -1;    // exit status, or 128 + signal number when killed
  bool timed_out = false;
  std::string out;       // first kMaxCapture bytes of stdout
  std::string err;       // first kMaxCapture bytes of stderr
};

inline constexpr std::size_t kMaxCapture = 64 * 1024;

// Runs the command to completion. Throws kiln::Error kSubprocessFailed only
// when the program cannot be started or its sandbox cannot be built; a
// non-zero exit is reported in the result.
CommandResult run(const Command& command);

// Runs the command and throws kiln::Error kSubprocessFailed (with the
// program's stderr) unless it exited 0 in time. Returns its stdout.
std::string run_checked(const Command& command);

// "qemu-img convert -f qcow2 ..." for messages.
std::string describe(const std::vector<std::string>& argv);

}  // namespace kiln
