// Which libvirt domain type kiln's guests get: "kvm" only where KVM works.
//
// A host may offer KVM in libvirt's capabilities (/dev/kvm exists) and still
// be unable to run a guest with it: nested or paravirtual KVM that stops a
// guest with "KVM internal error" at its first FPU instruction. Such a guest
// is defined, started, and paused at once. So "kvm" is chosen only when
// libvirt offers it *and* a probe ran a small 64-bit guest to its end through
// the KVM device; otherwise "qemu" (TCG), with the reason. A type set in the
// configuration is obeyed as it is.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace kiln::virt {

class Connection;

inline constexpr const char* kKvmDevice = "/dev/kvm";

struct KvmProbe {
  bool works = false;
  std::string detail;  // what the probe saw: "ran a 64-bit guest to hlt", "KVM_RUN: internal error 1", ...
  // False when the answer may change (a timeout under load, out of memory):
  // such a verdict is not remembered, the next boot probes again.
  bool lasting = true;
};

// Creates a VM on `device`, runs a 64-bit guest with paging that executes
// FPU, SSE, cpuid and port I/O instructions and halts, and reports whether it
// got there. Runs in a child process, so a KVM that hangs costs at most
// `timeout`; about 10 ms where KVM works. Never throws.
KvmProbe probe_kvm(const std::filesystem::path& device = kKvmDevice,
                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

struct VirtTypeChoice {
  std::string type;    // "kvm" or "qemu"
  std::string reason;  // one sentence for the log: why this type
};

// The rule, without I/O: `configured` ("kvm", "qemu") wins; "" means kvm when
// libvirt offers it and the probe worked, else qemu.
VirtTypeChoice choose_virt_type(const std::string& configured, bool libvirt_offers_kvm, const KvmProbe& probe);

// choose_virt_type() with libvirt's capabilities and probe_kvm(`device`). The
// probe runs only when libvirt offers kvm, and a lasting verdict is
// remembered for the life of the process (per device), so a busy agent probes once.
VirtTypeChoice resolve_virt_type(const std::string& configured, Connection& libvirt,
                                 const std::filesystem::path& device = kKvmDevice);

}  // namespace kiln::virt
