#include "kiln/virt/guest_start.h"

#include <libvirt/libvirt.h>

#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/virt/connection.h"

namespace kiln::virt {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr std::size_t kLogTailLines = 5;

std::string paused_reason(int reason) {
  switch (reason) {
    case VIR_DOMAIN_PAUSED_USER: return "by a user";
    case VIR_DOMAIN_PAUSED_MIGRATION: return "migrating";
    case VIR_DOMAIN_PAUSED_SAVE: return "saving";
    case VIR_DOMAIN_PAUSED_DUMP: return "dumping";
    case VIR_DOMAIN_PAUSED_IOERROR: return "I/O error";
    case VIR_DOMAIN_PAUSED_WATCHDOG: return "watchdog";
    case VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: return "from snapshot";
    case VIR_DOMAIN_PAUSED_SHUTTING_DOWN: return "shutting down";
    case VIR_DOMAIN_PAUSED_SNAPSHOT: return "snapshot";
    case VIR_DOMAIN_PAUSED_CRASHED: return "crashed";
    case VIR_DOMAIN_PAUSED_STARTING_UP: return "starting up";
    case VIR_DOMAIN_PAUSED_POSTCOPY: return "post-copy";
    case VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: return "post-copy failed";
    default: return "internal error or unknown";  // QEMU's internal-error stop maps here
  }
}

std::string shutoff_reason(int reason) {
  switch (reason) {
    case VIR_DOMAIN_SHUTOFF_SHUTDOWN: return "shut down by the guest";
    case VIR_DOMAIN_SHUTOFF_DESTROYED: return "destroyed";
    case VIR_DOMAIN_SHUTOFF_CRASHED: return "crashed";
    case VIR_DOMAIN_SHUTOFF_FAILED: return "failed to start";
    default: return "unknown";
  }
}

std::filesystem::path qemu_log(const StartPolicy& policy, const std::string& name) {
  return policy.qemu_log_dir / (name + ".log");
}

// The last lines QEMU's log for `name` got after `offset` (the log is
// appended across starts: older lines are another start's), or "".
std::string qemu_log_tail(const std::filesystem::path& file, std::uint64_t offset) {
  std::ifstream log(file);
  log.seekg(static_cast<std::streamoff>(offset));
  std::vector<std::string> lines;
  for (std::string line; std::getline(log, line);) {
    if (line.empty()) continue;
    lines.push_back(line);
    if (lines.size() > kLogTailLines) lines.erase(lines.begin());
  }
  std::string tail;
  for (const auto& line : lines) tail += (tail.empty() ? "" : " | ") + line;
  return tail;
}

std::string duration_text(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) return std::to_string(duration.count() / 1000) + " s";
  return std::to_string(duration.count()) + " ms";
}

[[noreturn]] void fail(const Domain& domain, const std::string& what, const StartPolicy& policy,
                       std::uint64_t log_offset) {
  std::string message = "domain " + domain.name() + " " + what;
  std::string tail = qemu_log_tail(qemu_log(policy, domain.name()), log_offset);
  if (!tail.empty()) message += "; QEMU's log ends: " + tail;
  throw Error(ErrorCode::kDomainStartFailed, message);
}

}  // namespace

StartVerdict judge_start(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:  // running, its vCPUs idle
      return StartVerdict::kRunning;
    case VIR_DOMAIN_PAUSED:
      // Paused on the way up or by an operator is not a failure of the guest;
      // paused by an error is.
      switch (reason) {
        case VIR_DOMAIN_PAUSED_STARTING_UP:
        case VIR_DOMAIN_PAUSED_USER:
        case VIR_DOMAIN_PAUSED_MIGRATION:
        case VIR_DOMAIN_PAUSED_SAVE:
        case VIR_DOMAIN_PAUSED_DUMP:
        case VIR_DOMAIN_PAUSED_SNAPSHOT:
          return StartVerdict::kStarting;
        default:
          return StartVerdict::kFailed;
      }
    case VIR_DOMAIN_NOSTATE:
      return StartVerdict::kStarting;
    default:  // shut off, shutting down, crashed, suspended to RAM
      return StartVerdict::kFailed;
  }
}

std::string describe_state(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_BLOCKED: return "idle";
    case VIR_DOMAIN_PAUSED: return "paused (" + paused_reason(reason) + ")";
    case VIR_DOMAIN_SHUTDOWN: return "in shutdown";
    case VIR_DOMAIN_SHUTOFF: return "shut off (" + shutoff_reason(reason) + ")";
    case VIR_DOMAIN_CRASHED: return "crashed";
    case VIR_DOMAIN_PMSUSPENDED: return "pmsuspended";
    default: return "no state";
  }
}

void start_and_confirm(Connection& libvirt, Domain& domain, const StartPolicy& policy) {
  std::error_code absent;
  std::uint64_t log_offset = std::filesystem::file_size(qemu_log(policy, domain.name()), absent);
  if (absent) log_offset = 0;
  try {
    domain.start();
  } catch (const Error& error) {
    fail(domain, "did not start: " + std::string(error.what()), policy, log_offset);
  }
  confirm_running(libvirt, domain, policy, log_offset);
}

void confirm_running(Connection& libvirt, Domain& domain, const StartPolicy& policy, std::uint64_t log_offset) {
  auto settle = libvirt.driver() == "Test" ? std::chrono::milliseconds(0) : policy.settle;
  auto deadline = Clock::now() + policy.timeout;
  std::optional<Clock::time_point> running_since;
  for (;;) {
    auto [state, reason] = domain.state_and_reason();
    auto now = Clock::now();
    switch (judge_start(state, reason)) {
      case StartVerdict::kFailed:
        fail(domain, "is " + describe_state(state, reason) + " right after its start", policy, log_offset);
      case StartVerdict::kRunning:
        if (!running_since) running_since = now;
        if (now - *running_since >= settle) return;
        break;
      case StartVerdict::kStarting:
        running_since.reset();
        if (now >= deadline) {
          fail(domain, "is still " + describe_state(state, reason) + " " + duration_text(policy.timeout) +
                           " after its start",
               policy, log_offset);
        }
        break;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace kiln::virt
