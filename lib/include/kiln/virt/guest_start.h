// Starting a domain is not booting it.
//
// virDomainCreate returns once QEMU has been told to run its vCPUs; a guest
// that KVM cannot run is paused a moment later ("KVM internal error"), and a
// guest whose firmware or kernel fails may crash or shut off. So a start
// counts only when the domain has been seen running for a short settle time:
// paused for an error, crashed or shut off fails it at once with
// kDomainStartFailed, libvirt's reason and the tail of QEMU's log; a domain
// that never reaches running within the timeout fails it too.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

namespace kiln::virt {

class Connection;
class Domain;

struct StartPolicy {
  // [libvirt] start_timeout_seconds: from virDomainCreate to running.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Running must last this long. A vCPU that KVM cannot run stops at its
  // first instructions, well within it; a driver that runs no guest (the test
  // driver) has nothing to settle and skips it.
  std::chrono::milliseconds settle{std::chrono::seconds(1)};
  // Where libvirt's QEMU driver writes <domain name>.log on this host.
  std::filesystem::path qemu_log_dir = "/var/log/libvirt/qemu";
};

// What one look at a domain's state means for its start.
enum class StartVerdict { kRunning, kStarting, kFailed };

// state and reason are virDomainGetState's.
StartVerdict judge_start(int state, int reason);

// "paused (internal error or unknown)", "shut off (failed to start)": virsh's
// words for a state and its reason.
std::string describe_state(int state, int reason);

// Starts `domain` and returns once it is running and has stayed so for the
// settle time. Throws kDomainStartFailed naming the state, its reason and
// QEMU's last log lines; the domain is left as it is (the caller rolls back).
void start_and_confirm(Connection& libvirt, Domain& domain, const StartPolicy& policy);

// The second half of start_and_confirm(): waits for an already started
// domain. A failure quotes QEMU's log from `log_offset` on (what this start wrote).
void confirm_running(Connection& libvirt, Domain& domain, const StartPolicy& policy, std::uint64_t log_offset = 0);

}  // namespace kiln::virt
