// kiln's domain XML on the real libvirtd the peers run (QEMU under TCG when
// the machine has no /dev/kvm), read like an operator's session: build the
// disks with qemu-img, define, start, see it running, destroy, undefine, and
// judge what libvirt did with virsh and the filesystem.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/virt/connection.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/guest_start.h"
#include "kiln/virt/image_properties.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::test::virsh;

namespace {

// Destroys and undefines the domain when a test ends early, so a failure
// leaves no guest running in the peers' libvirtd.
class DomainCleanup {
 public:
  DomainCleanup(kiln::virt::Connection& libvirt, std::string uuid)
      : libvirt_(libvirt), uuid_(std::move(uuid)) {}
  DomainCleanup(const DomainCleanup&) = delete;
  DomainCleanup& operator=(const DomainCleanup&) = delete;
  ~DomainCleanup() {
    try {
      auto domain = libvirt_.lookup_by_uuid(uuid_);
      if (!domain) return;
      if (domain->is_active()) domain->destroy();
      domain->undefine();
    } catch (const kiln::Error&) {
      // Best effort: the peers' stop script destroys whatever is left.
    }
  }

 private:
  kiln::virt::Connection& libvirt_;
  std::string uuid_;
};

// A guest as kiln provisions one: a qcow2 overlay over a raw base, no swap,
// console.log beside the disk; domain type qemu, so the test does not depend on the host's KVM.
kiln::virt::DomainSpec guest_in(const kiln::test::ScratchDir& scratch) {
  fs::path base = scratch / "base.raw";
  fs::path disk = scratch / "disk";
  kiln::run_checked({{"qemu-img", "create", "-q", "-f", "raw", base.string(), "64M"}});
  kiln::run_checked(
      {{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.string(), disk.string(), "1G"}});
  kiln::virt::DomainSpec spec;
  spec.domain_type = "qemu";
  spec.uuid = kiln::test::random_uuid();
  spec.name = "kiln-test-" + spec.uuid;
  spec.memory_mb = 256;
  spec.vcpus = 1;
  spec.root_disk = kiln::virt::DiskFile{disk.string(), "qcow2", std::nullopt};
  spec.cache_mode = "writeback";  // /tmp may be a tmpfs, which has no O_DIRECT
  spec.console_log = (scratch / "console.log").string();
  spec.image_id = kiln::test::random_uuid();
  spec.display_name = "libvirtd test guest";
  return spec;
}

void require_valid_for_libvirt(const kiln::test::ScratchDir& scratch, const std::string& xml) {
  kiln::test::write_text(scratch / "libvirt.xml", xml);
  auto result = kiln::run({{"virt-xml-validate", (scratch / "libvirt.xml").string(), "domain"}});
  INFO(xml << result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

std::string domain_state(const std::string& name) {
  auto result = virsh({"domstate", name});
  return result.exit_code == 0 ? result.out.substr(0, result.out.find('\n')) : "absent";
}

// libvirt creates a tap through /dev/net/tun; without it no ethernet or
// bridge NIC can exist, which is a property of the machine, not of kiln.
void require_tap_devices_allowed() {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    FAIL("this machine blocks tap devices: open(\"/dev/net/tun\", O_RDWR) failed: "
         << std::strerror(errno) << "; libvirt needs it to create the tap of <interface type='ethernet'>"
         << " (load the tun module, or give the container /dev/net/tun and CAP_NET_ADMIN)");
  }
  ::close(fd);
}

}  // namespace

TEST_CASE(
    "a UEFI q35 guest on a virtio overlay starts on the real libvirtd, and undefine removes its nvram") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt(kiln::test::peers().libvirt_uri);
  REQUIRE(fs::exists(kiln::virt::kOvmfCode));
  REQUIRE(fs::exists(kiln::virt::kOvmfVariablesTemplate));
  auto spec = guest_in(scratch);
  spec.nvram_path = (scratch / "nvram.fd").string();
  kiln::virt::apply_image_properties({{"hw_firmware_type", "uefi"}, {"hw_machine_type", "q35"}}, spec);
  std::string xml = kiln::virt::build_domain_xml(spec);
  require_valid_for_libvirt(scratch, xml);

  DomainCleanup cleanup(libvirt, spec.uuid);
  auto domain = libvirt.define(xml);
  REQUIRE(domain_state(spec.name) == "shut off");
  kiln::virt::start_and_confirm(libvirt, domain, {});  // running, and still so a second later
  REQUIRE(domain.state() == "running");
  REQUIRE(domain_state(spec.name) == "running");

  // libvirt made the instance's variable store from the template.
  REQUIRE(fs::exists(spec.nvram_path));
  REQUIRE(kiln::file_size(spec.nvram_path) == kiln::file_size(kiln::virt::kOvmfVariablesTemplate));
  auto defined = virsh({"dumpxml", spec.name});
  REQUIRE(defined.out.find(std::string(kiln::virt::kOvmfCode) + "</loader>") != std::string::npos);
  REQUIRE(defined.out.find(spec.nvram_path + "</nvram>") != std::string::npos);
  REQUIRE(defined.out.find("<target dev='vda' bus='virtio'/>") != std::string::npos);
  // The overlay still points at its raw base, which QEMU opened read-only.
  REQUIRE(defined.out.find("<format type='raw'/>") != std::string::npos);

  domain.destroy();
  REQUIRE(domain_state(spec.name) == "shut off");
  REQUIRE(fs::exists(spec.nvram_path));  // a stopped guest keeps its UEFI variables
  domain.undefine();
  REQUIRE(domain_state(spec.name) == "absent");
  REQUIRE_FALSE(fs::exists(spec.nvram_path));
}

TEST_CASE("a guest with an ethernet NIC gets its tap on the real libvirtd, and the tap goes when it stops") {
  require_tap_devices_allowed();
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt(kiln::test::peers().libvirt_uri);
  auto spec = guest_in(scratch);
  std::string tap = "kt" + spec.uuid.substr(0, 8);  // unique per run, 10 characters
  std::string mac =
      "fa:16:3e:" + spec.uuid.substr(0, 2) + ":" + spec.uuid.substr(2, 2) + ":" + spec.uuid.substr(4, 2);
  spec.interfaces = {{"ethernet", "", mac, tap, ""}};
  kiln::virt::apply_image_properties({{"hw_vif_model", "e1000e"}}, spec);
  std::string xml = kiln::virt::build_domain_xml(spec);
  require_valid_for_libvirt(scratch, xml);
  fs::path tap_device = fs::path("/sys/class/net") / tap;
  REQUIRE_FALSE(fs::exists(tap_device));

  DomainCleanup cleanup(libvirt, spec.uuid);
  auto domain = libvirt.define(xml);
  try {
    kiln::virt::start_and_confirm(libvirt, domain, {});
  } catch (const kiln::Error& error) {
    FAIL(
        "libvirt could not start a guest with <interface type='ethernet'> on this machine: " << error.what());
  }
  REQUIRE(domain.state() == "running");
  REQUIRE(fs::exists(tap_device));
  auto interfaces = virsh({"domiflist", spec.name});
  INFO(interfaces.out << interfaces.err);
  REQUIRE(interfaces.out.find(tap) != std::string::npos);
  REQUIRE(interfaces.out.find("ethernet") != std::string::npos);
  REQUIRE(interfaces.out.find("e1000e") != std::string::npos);
  REQUIRE(interfaces.out.find(mac) != std::string::npos);

  domain.destroy();
  REQUIRE_FALSE(fs::exists(tap_device));
  domain.undefine();
  REQUIRE(domain_state(spec.name) == "absent");
}
