// Which domain type guests get, and when a started guest counts as booted.
#include <libvirt/libvirt.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "assertions.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "kiln/virt/connection.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/guest_start.h"
#include "kiln/virt/virt_type.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::virt::KvmProbe;
using kiln::virt::StartVerdict;

TEST_CASE("an unset virt_type is kvm only where libvirt offers it and the probe ran a guest") {
  KvmProbe works{true, "a 64-bit guest ran to hlt on /dev/kvm"};
  KvmProbe broken{false, "KVM on /dev/kvm stopped the probe guest with an internal error (suberror 1)"};
  REQUIRE(kiln::virt::choose_virt_type("", true, works).type == "kvm");
  auto refused = kiln::virt::choose_virt_type("", true, broken);
  REQUIRE(refused.type == "qemu");
  REQUIRE(refused.reason.find("internal error") != std::string::npos);
  REQUIRE(kiln::virt::choose_virt_type("", false, works).type == "qemu");
  REQUIRE(kiln::virt::choose_virt_type("", false, works).reason.find("offers no kvm") != std::string::npos);
  // Set explicitly, it is obeyed whatever the host says.
  REQUIRE(kiln::virt::choose_virt_type("kvm", false, broken).type == "kvm");
  REQUIRE(kiln::virt::choose_virt_type("qemu", true, works).type == "qemu");
}

TEST_CASE("the KVM probe pointed at a device that is not KVM says so instead of choosing kvm") {
  auto null_device = kiln::virt::probe_kvm("/dev/null");
  REQUIRE_FALSE(null_device.works);
  REQUIRE(null_device.detail.find("not a KVM device") != std::string::npos);
  kiln::test::ScratchDir scratch;
  auto missing = kiln::virt::probe_kvm(scratch / "kvm");
  REQUIRE_FALSE(missing.works);
  REQUIRE(missing.detail.find("cannot open") != std::string::npos);
  // A broken KVM host simulated: libvirt offers kvm, the probe fails, qemu is chosen.
  auto choice = kiln::virt::choose_virt_type("", true, null_device);
  REQUIRE(choice.type == "qemu");
  REQUIRE(choice.reason.find("does not work here") != std::string::npos);
}

// QEMU itself, with KVM, booting memtest86+ (which stops at its first `finit`
// on a paravirtual KVM that cannot run it): the probe must agree with it on
// this host, whichever kind of host this is (no /dev/kvm, a broken one, a
// working one).
TEST_CASE("the KVM probe agrees with QEMU about this host's KVM") {
  const fs::path kernel = "/boot/memtest86+x64.bin";
  INFO("needs qemu-system-x86 and memtest86+ (tools/install-deps)");
  REQUIRE(fs::exists(kernel));
  kiln::test::ScratchDir scratch;
  fs::path serial = scratch / "serial.log";
  auto qemu = kiln::run({{"qemu-system-x86_64", "-accel", "kvm", "-nodefaults", "-display", "none", "-m", "64",
                          "-no-reboot", "-serial", "file:" + serial.string(), "-kernel", kernel.string(),
                          "-append", "console=ttyS0,115200"},
                         {},
                         std::chrono::seconds(10)});
  std::string console = fs::exists(serial) ? kiln::read_file(serial) : "";
  bool qemu_ran_the_guest = console.find("Memtest86+") != std::string::npos &&
                            qemu.err.find("KVM internal error") == std::string::npos;
  auto probe = kiln::virt::probe_kvm();
  INFO("probe: " << probe.detail << "\nqemu stderr: " << qemu.err << "\nconsole: " << console.substr(0, 300));
  REQUIRE(probe.works == qemu_ran_the_guest);
  // Where KVM is there, the verdict must come from running the guest: a probe
  // that cannot even set up its VM (a wrong ioctl) would call every host broken.
  if (fs::exists("/dev/kvm")) REQUIRE(probe.detail.find("cannot set up") == std::string::npos);
}

TEST_CASE("a start is judged by libvirt's state and reason") {
  using kiln::virt::judge_start;
  REQUIRE(judge_start(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_BOOTED) == StartVerdict::kRunning);
  REQUIRE(judge_start(VIR_DOMAIN_BLOCKED, 0) == StartVerdict::kRunning);
  REQUIRE(judge_start(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_STARTING_UP) == StartVerdict::kStarting);
  REQUIRE(judge_start(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_USER) == StartVerdict::kStarting);
  // QEMU stopped by "KVM internal error" is paused with reason unknown.
  REQUIRE(judge_start(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_UNKNOWN) == StartVerdict::kFailed);
  REQUIRE(judge_start(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR) == StartVerdict::kFailed);
  REQUIRE(judge_start(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_CRASHED) == StartVerdict::kFailed);
  REQUIRE(judge_start(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_FAILED) == StartVerdict::kFailed);
  REQUIRE(judge_start(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_SHUTDOWN) == StartVerdict::kFailed);
  REQUIRE(judge_start(VIR_DOMAIN_CRASHED, 0) == StartVerdict::kFailed);
  REQUIRE(kiln::virt::describe_state(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_UNKNOWN) ==
          "paused (internal error or unknown)");
  REQUIRE(kiln::virt::describe_state(VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_FAILED) == "shut off (failed to start)");
}

namespace {

kiln::virt::DomainSpec small_spec(const std::string& uuid) {
  kiln::virt::DomainSpec spec;
  spec.domain_type = "qemu";
  spec.uuid = uuid;
  spec.name = "kiln-start-" + uuid;
  spec.memory_mb = 128;
  spec.vcpus = 1;
  spec.root_disk = kiln::virt::DiskFile{"/var/lib/kiln/instances/" + uuid + "/disk", "qcow2", std::nullopt};
  spec.console_log = "/var/lib/kiln/instances/" + uuid + "/console.log";
  return spec;
}

}  // namespace

TEST_CASE("start_and_confirm returns for a running domain and fails a paused one with the log's tail") {
  kiln::virt::Connection libvirt("test:///default");
  auto domain = libvirt.define(kiln::virt::build_domain_xml(small_spec(kiln::test::random_uuid())));
  kiln::virt::start_and_confirm(libvirt, domain, {});
  REQUIRE(domain.state() == "running");

  // The test driver pauses with reason "user", which is not a failure in
  // itself; a domain that stays paused past the timeout is one.
  domain.suspend();
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / (domain.name() + ".log"), "line 1\nKVM internal error. Suberror: 1\n");
  kiln::virt::StartPolicy policy;
  policy.timeout = std::chrono::milliseconds(300);
  policy.qemu_log_dir = scratch.path();
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::confirm_running(libvirt, domain, policy), kiln::ErrorCode::kDomainStartFailed,
                              "is still paused (by a user)");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::confirm_running(libvirt, domain, policy), kiln::ErrorCode::kDomainStartFailed,
                              "QEMU's log ends: line 1 | KVM internal error. Suberror: 1");
  domain.destroy();
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::confirm_running(libvirt, domain, policy), kiln::ErrorCode::kDomainStartFailed,
                              "is shut off (destroyed) right after its start");
  domain.undefine();
}
