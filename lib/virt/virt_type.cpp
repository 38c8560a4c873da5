#include "kiln/virt/virt_type.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>

#include "kiln/virt/connection.h"

namespace kiln::virt {

namespace {

// What the child reports through its pipe: the stage it reached and a value
// (an errno, or KVM's exit reason and suberror).
enum class Stage : int { kWorked, kOpen, kApiVersion, kCreateVm, kSetup, kRun, kUnexpectedExit, kWrongOutput };

struct Report {
  Stage stage = Stage::kOpen;
  int value = 0;
  int detail = 0;
};

// Guest-physical layout of the probe's 2 MiB of memory, identity-mapped by
// one 2 MiB page: page tables, then code; the stack grows down from the top.
constexpr std::uint64_t kMemorySize = 2 << 20;
constexpr std::uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPageDirectory = 0x3000, kCode = 0x8000;
constexpr std::uint16_t kSerialPort = 0x3f8;

// The instructions that stop a guest on a paravirtual or nested KVM which
// cannot run everything (memtest86+ stops there at its first `finit`), then
// one byte out of the serial port and hlt.
constexpr std::array<unsigned char, 25> kGuestCode{
    0x9b, 0xdb, 0xe3,        // finit
    0xd9, 0xe8,              // fld1
    0xdd, 0xd8,              // fstp st(0)
    0x66, 0x0f, 0xef, 0xc0,  // pxor xmm0, xmm0
    0x31, 0xc0,              // xor eax, eax
    0x0f, 0xa2,              // cpuid
    0x50, 0x58,              // push rax; pop rax (a store and a load through the page tables)
    0x66, 0xba, 0xf8, 0x03,  // mov dx, 0x3f8
    0xb0, 'K',               // mov al, 'K'
    0xee,                    // out dx, al
    0xf4,                    // hlt
};

// <linux/kvm.h>'s kvm_cpuid2 ends in a flexible array that g++ lays out
// after a padding byte (sizeof 12, C's is 8), and the ioctl numbers encode
// that size: KVM_GET_SUPPORTED_CPUID then means nothing to the kernel
// (EINVAL). So the table and its two ioctls are spelled with C's layout.
constexpr std::uint32_t kCpuidEntries = 256;
struct CpuidTable {
  std::uint32_t nent;
  std::uint32_t padding;
  kvm_cpuid_entry2 entries[kCpuidEntries];
};
using CpuidHeader = std::array<std::uint32_t, 2>;
static_assert(offsetof(CpuidTable, entries) == sizeof(CpuidHeader));
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);

void build_page_tables(unsigned char* memory) {
  auto entry = [memory](std::uint64_t table, std::uint64_t value) {
    std::memcpy(memory + table, &value, sizeof value);
  };
  constexpr std::uint64_t kPresent = 1, kWritable = 2, kLargePage = 0x80;
  entry(kPml4, kPdpt | kPresent | kWritable);
  entry(kPdpt, kPageDirectory | kPresent | kWritable);
  entry(kPageDirectory, 0 | kPresent | kWritable | kLargePage);
}

void enter_long_mode(kvm_sregs& sregs) {
  kvm_segment code{};
  code.limit = 0xffffffff;
  code.selector = 1 << 3;
  code.present = 1;
  code.type = 11;  // execute, read, accessed
  code.s = 1;
  code.l = 1;
  code.g = 1;
  sregs.cs = code;
  kvm_segment data = code;
  data.type = 3;  // read, write, accessed
  data.selector = 2 << 3;
  data.l = 0;
  data.db = 1;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.cr3 = kPml4;
  sregs.cr4 = (1 << 5) | (1 << 9) | (1 << 10);  // PAE, OSFXSR, OSXMMEXCPT
  sregs.cr0 = 0x80050033;                        // PG, AM, WP, NE, ET, MP, PE
  sregs.efer = 0x500;                            // LMA, LME
}

// Runs in the forked child: raw system calls only (the parent may have had
// other threads holding allocator locks at fork time).
Report probe_in_child(const char* device) {
  int kvm = open(device, O_RDWR | O_CLOEXEC);
  if (kvm < 0) return {Stage::kOpen, errno};
  if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return {Stage::kApiVersion, errno};
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return {Stage::kCreateVm, errno};
  void* mapped = mmap(nullptr, kMemorySize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return {Stage::kSetup, errno, 0};
  auto* memory = static_cast<unsigned char*>(mapped);
  build_page_tables(memory);
  std::memcpy(memory + kCode, kGuestCode.data(), kGuestCode.size());
  kvm_userspace_memory_region region{0, 0, 0, kMemorySize, reinterpret_cast<std::uint64_t>(memory)};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return {Stage::kSetup, errno, 1};
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return {Stage::kSetup, errno, 2};

  // The CPUID a real VMM gives its guest: what KVM supports.
  static CpuidTable cpuid;
  cpuid.nent = kCpuidEntries;
  if (ioctl(kvm, kGetSupportedCpuid, &cpuid) < 0) return {Stage::kSetup, errno, 3};
  if (ioctl(vcpu, kSetCpuid2, &cpuid) < 0) return {Stage::kSetup, errno, 4};

  kvm_sregs sregs{};
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return {Stage::kSetup, errno, 5};
  enter_long_mode(sregs);
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return {Stage::kSetup, errno, 6};
  kvm_regs regs{};
  regs.rflags = 2;
  regs.rip = kCode;
  regs.rsp = kMemorySize;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return {Stage::kSetup, errno, 7};

  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < 0) return {Stage::kSetup, errno, 8};
  void* run_mapped = mmap(nullptr, static_cast<std::size_t>(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run_mapped == MAP_FAILED) return {Stage::kSetup, errno, 9};
  auto* run = static_cast<kvm_run*>(run_mapped);

  bool wrote = false;
  for (int exits = 0; exits < 16; ++exits) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      return {Stage::kRun, errno};
    }
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == kSerialPort) {
      wrote = reinterpret_cast<const char*>(run)[run->io.data_offset] == 'K';
      continue;
    }
    if (run->exit_reason == KVM_EXIT_HLT) return wrote ? Report{Stage::kWorked} : Report{Stage::kWrongOutput};
    int suberror = run->exit_reason == KVM_EXIT_INTERNAL_ERROR ? static_cast<int>(run->internal.suberror) : 0;
    return {Stage::kUnexpectedExit, static_cast<int>(run->exit_reason), suberror};
  }
  return {Stage::kWrongOutput};
}

// What each kSetup report's detail names, in probe_in_child()'s order.
constexpr std::array<const char*, 10> kSetupSteps{"mmap", "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_VCPU", "KVM_GET_SUPPORTED_CPUID", "KVM_SET_CPUID2", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_REGS", "KVM_GET_VCPU_MMAP_SIZE", "mmap of kvm_run"};

std::string describe(const Report& report, const std::string& device) {
  auto error = [&](const char* what) { return device + ": " + what + ": " + std::strerror(report.value); };
  switch (report.stage) {
    case Stage::kWorked: return "a 64-bit guest ran to hlt on " + device;
    case Stage::kOpen: return error("cannot open");
    case Stage::kApiVersion: return device + " is not a KVM device of API version 12";
    case Stage::kCreateVm: return error("KVM_CREATE_VM failed");
    case Stage::kSetup: return error(("cannot set up a probe VM: " + std::string(kSetupSteps.at(report.detail))).c_str());
    case Stage::kRun: return error("KVM_RUN failed");
    case Stage::kUnexpectedExit:
      if (report.value == KVM_EXIT_INTERNAL_ERROR) {
        return "KVM on " + device + " stopped the probe guest with an internal error (suberror " +
               std::to_string(report.detail) + "), as it would stop a real guest";
      }
      return "KVM on " + device + " stopped the probe guest with exit reason " + std::to_string(report.value);
    case Stage::kWrongOutput: return "the probe guest on " + device + " did not run to its end";
  }
  return "unknown probe result";
}

// Whether a report will be the same on the next try: a guest that ran (or
// stopped with KVM's own error), a device that is not there or not KVM. Out
// of memory or a busy system is not.
bool is_lasting(const Report& report) {
  switch (report.stage) {
    case Stage::kWorked:
    case Stage::kApiVersion:
    case Stage::kUnexpectedExit:
    case Stage::kWrongOutput:
      return true;
    case Stage::kOpen:
      return report.value == ENOENT || report.value == ENODEV || report.value == ENXIO;
    default:
      return report.value != ENOMEM && report.value != EAGAIN && report.value != EBUSY && report.value != EINTR;
  }
}

// Waits for `child` until `timeout`; kills it after that. True when it was reaped in time.
bool wait_or_kill(pid_t child, int pipe_fd, std::chrono::milliseconds timeout) {
  pollfd readable{pipe_fd, POLLIN, 0};
  int ready = 0;
  do {
    ready = poll(&readable, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  if (ready == 0) kill(child, SIGKILL);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return ready > 0;
}

}  // namespace

KvmProbe probe_kvm(const std::filesystem::path& device, std::chrono::milliseconds timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {false, std::string("cannot probe KVM: pipe: ") + std::strerror(errno), false};
  std::string device_name = device.string();
  pid_t child = fork();
  if (child < 0) {
    close(fds[0]);
    close(fds[1]);
    return {false, std::string("cannot probe KVM: fork: ") + std::strerror(errno), false};
  }
  if (child == 0) {
    // Keep only the report pipe: a copy of another thread's lock or socket
    // must not outlive the probe's few milliseconds in a stuck KVM_RUN.
    if (fds[1] > 3) close_range(3, static_cast<unsigned>(fds[1]) - 1, 0);
    close_range(static_cast<unsigned>(fds[1]) + 1, ~0U, 0);
    Report report = probe_in_child(device_name.c_str());
    ssize_t ignored = write(fds[1], &report, sizeof report);
    (void)ignored;
    _exit(0);
  }
  close(fds[1]);
  Report report{Stage::kWrongOutput};
  bool in_time = wait_or_kill(child, fds[0], timeout);
  bool complete = in_time && read(fds[0], &report, sizeof report) == static_cast<ssize_t>(sizeof report);
  close(fds[0]);
  if (!in_time) {
    return {false, "the KVM probe on " + device_name + " did not finish in " + std::to_string(timeout.count()) + " ms",
            false};
  }
  if (!complete) return {false, "the KVM probe on " + device_name + " died before it reported", false};
  return {report.stage == Stage::kWorked, describe(report, device_name), is_lasting(report)};
}

VirtTypeChoice choose_virt_type(const std::string& configured, bool libvirt_offers_kvm, const KvmProbe& probe) {
  if (!configured.empty()) return {configured, "[libvirt] virt_type = " + configured};
  if (!libvirt_offers_kvm) return {"qemu", "libvirt offers no kvm domain type for x86_64 on this host"};
  if (!probe.works) return {"qemu", "libvirt offers kvm but it does not work here: " + probe.detail};
  return {"kvm", "libvirt offers kvm and " + probe.detail};
}

VirtTypeChoice resolve_virt_type(const std::string& configured, Connection& libvirt,
                                 const std::filesystem::path& device) {
  if (!configured.empty()) return choose_virt_type(configured, false, {});
  if (!libvirt.offers_kvm()) return choose_virt_type(configured, false, {});
  static std::mutex mutex;
  static std::map<std::filesystem::path, KvmProbe> probes;
  std::lock_guard lock(mutex);
  auto found = probes.find(device);
  if (found != probes.end()) return choose_virt_type(configured, true, found->second);
  KvmProbe probe = probe_kvm(device);
  if (probe.lasting) probes.emplace(device, probe);
  return choose_virt_type(configured, true, probe);
}

}  // namespace kiln::virt
