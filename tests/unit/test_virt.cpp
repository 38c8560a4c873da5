#include <algorithm>
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <pugixml.hpp>

#include "assertions.h"
#include "kiln/util/subprocess.h"
#include "kiln/virt/connection.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/image_properties.h"
#include "scratch.h"

using kiln::ErrorCode;
using kiln::virt::DomainSpec;
using kiln::virt::NetworkInterface;
using Properties = std::map<std::string, std::string>;

namespace {

std::string instance_path(const std::string& uuid, const std::string& file) {
  return "/var/lib/kiln/instances/" + uuid + "/" + file;
}

DomainSpec sample_spec(const std::string& uuid) {
  DomainSpec spec;
  spec.domain_type = "kvm";
  spec.name = "instance-" + uuid;
  spec.uuid = uuid;
  spec.memory_mb = 512;
  spec.vcpus = 2;
  spec.root_disk = kiln::virt::DiskFile{instance_path(uuid, "disk"), "qcow2", std::nullopt};
  spec.swap_disk = kiln::virt::DiskFile{instance_path(uuid, "disk.swap"), "qcow2", std::nullopt};
  spec.console_log = instance_path(uuid, "console.log");
  spec.nvram_path = instance_path(uuid, "nvram");
  spec.image_id = "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11";
  spec.display_name = "web-1";
  return spec;
}

NetworkInterface bridge_nic(const std::string& mac, const std::string& tap, const std::string& model = "") {
  return {"bridge", "br-int", mac, tap, model};
}

NetworkInterface ethernet_nic(const std::string& mac, const std::string& tap, const std::string& model = "") {
  return {"ethernet", "", mac, tap, model};
}

pugi::xml_document parse(const std::string& xml) {
  pugi::xml_document document;
  REQUIRE(document.load_string(xml.c_str()));
  return document;
}

// The attribute or the element text at `xpath`, or "(absent)".
std::string value_at(const pugi::xml_document& document, const std::string& xpath) {
  pugi::xpath_node found = document.select_node(xpath.c_str());
  if (!found) return "(absent)";
  if (found.attribute()) return found.attribute().value();
  return found.node().text().get();
}

size_t count_at(const pugi::xml_document& document, const std::string& xpath) {
  return document.select_nodes(xpath.c_str()).size();
}

void require_valid_for_libvirt(const kiln::test::ScratchDir& scratch, const std::string& xml) {
  kiln::test::write_text(scratch / "libvirt.xml", xml);
  auto result = kiln::run({{"virt-xml-validate", (scratch / "libvirt.xml").string(), "domain"}});
  INFO(xml << result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

// One row of the property table: what the image says, what the request adds,
// and what the XML must then show.
struct Row {
  std::string what;
  Properties properties;
  std::function<void(DomainSpec&)> adjust;
  std::vector<std::pair<std::string, std::string>> expected;  // xpath -> value, or "(absent)"
};

const std::string kIso = "/var/lib/kiln/instances/_base/0123abcd";

void with_iso(DomainSpec& spec) {
  spec.cdrom_images = {kIso};
  spec.boot_from_cdrom = true;
}

void with_kernel(DomainSpec& spec) {
  spec.kernel_path = "/var/lib/kiln/instances/" + spec.uuid + "/kernel";
  spec.initrd_path = "/var/lib/kiln/instances/" + spec.uuid + "/ramdisk";
}

void nothing(DomainSpec&) {}

std::vector<Row> property_table() {
  return {
      {"no properties: Nova's KVM defaults",
       {},
       nothing,
       {{"/domain/os/type/@machine", "pc"},
        {"/domain/os/boot/@dev", "hd"},
        {"/domain/os/loader", "(absent)"},
        {"/domain/devices/disk[target/@dev='vda']/target/@bus", "virtio"},
        {"/domain/devices/disk[target/@dev='vdb']/source/@file", "(swap)"},
        {"/domain/devices/controller[@type='usb']/@model", "none"},
        {"/domain/devices/video/model/@type", "virtio"},
        {"/domain/devices/channel", "(absent)"},
        {"/domain/clock/@offset", "utc"}}},
      {"a root disk alone, without swap",
       {},
       [](DomainSpec& spec) { spec.swap_disk.reset(); },
       {{"/domain/devices/disk[target/@dev='vda']/source/@file", "(root)"},
        {"/domain/devices/disk[target/@dev='vdb']", "(absent)"}}},
      {"hw_disk_bus=scsi puts the disks on a virtio-scsi controller",
       {{"hw_disk_bus", "scsi"}},
       nothing,
       {{"/domain/devices/disk[target/@dev='sda']/target/@bus", "scsi"},
        {"/domain/devices/disk[target/@dev='sdb']/source/@file", "(swap)"},
        {"/domain/devices/controller[@type='scsi']/@model", "virtio-scsi"}}},
      {"hw_disk_bus=sata names the disks sda, sdb",
       {{"hw_disk_bus", "sata"}},
       nothing,
       {{"/domain/devices/disk[target/@dev='sda']/target/@bus", "sata"},
        {"/domain/devices/controller[@type='scsi']", "(absent)"}}},
      {"hw_disk_bus=ide names the disks hda, hdb",
       {{"hw_disk_bus", "ide"}},
       nothing,
       {{"/domain/devices/disk[target/@dev='hda']/target/@bus", "ide"},
        {"/domain/devices/disk[target/@dev='hdb']/source/@file", "(swap)"}}},
      {"hw_disk_bus=usb keeps the USB controller",
       {{"hw_disk_bus", "usb"}},
       nothing,
       {{"/domain/devices/disk[target/@dev='sda']/target/@bus", "usb"},
        {"/domain/devices/controller[@type='usb']", "(absent)"}}},
      {"an ephemeral disk sits between root and swap",
       {},
       [](DomainSpec& spec) {
         spec.ephemeral_disk = kiln::virt::DiskFile{instance_path(spec.uuid, "disk.local"), "qcow2", std::nullopt};
       },
       {{"/domain/devices/disk[target/@dev='vdb']/source/@file", "(local)"},
        {"/domain/devices/disk[target/@dev='vdc']/source/@file", "(swap)"}}},
      {"hw_vif_model=e1000 on a bridge NIC",
       {{"hw_vif_model", "e1000"}},
       [](DomainSpec& spec) { spec.interfaces = {bridge_nic("fa:16:3e:00:00:01", "tap0a1b2c3d-4e")}; },
       {{"/domain/devices/interface/@type", "bridge"},
        {"/domain/devices/interface/source/@bridge", "br-int"},
        {"/domain/devices/interface/target/@dev", "tap0a1b2c3d-4e"},
        {"/domain/devices/interface/mac/@address", "fa:16:3e:00:00:01"},
        {"/domain/devices/interface/model/@type", "e1000"}}},
      {"hw_vif_model=e1000e on an ethernet NIC with an uppercase MAC",
       {{"hw_vif_model", "e1000e"}},
       [](DomainSpec& spec) { spec.interfaces = {ethernet_nic("FA:16:3E:AB:CD:EF", "tap-kiln-1")}; },
       {{"/domain/devices/interface/@type", "ethernet"},
        {"/domain/devices/interface/source", "(absent)"},
        {"/domain/devices/interface/mac/@address", "fa:16:3e:ab:cd:ef"},
        {"/domain/devices/interface/model/@type", "e1000e"}}},
      {"hw_vif_model=rtl8139 for NICs without a model; a NIC's own model wins",
       {{"hw_vif_model", "rtl8139"}},
       [](DomainSpec& spec) {
         spec.interfaces = {ethernet_nic("fa:16:3e:00:00:02", ""),
                            bridge_nic("fa:16:3e:00:00:03", "", "ne2k_pci"),
                            bridge_nic("fa:16:3e:00:00:04", "", "pcnet")};
       },
       {{"/domain/devices/interface[mac/@address='fa:16:3e:00:00:02']/model/@type", "rtl8139"},
        {"/domain/devices/interface[mac/@address='fa:16:3e:00:00:02']/target", "(absent)"},
        {"/domain/devices/interface[mac/@address='fa:16:3e:00:00:03']/model/@type", "ne2k_pci"},
        {"/domain/devices/interface[mac/@address='fa:16:3e:00:00:04']/model/@type", "pcnet"}}},
      {"hw_vif_model=virtio, explicitly",
       {{"hw_vif_model", "virtio"}},
       [](DomainSpec& spec) { spec.interfaces = {bridge_nic("52:54:00:12:34:56", "")}; },
       {{"/domain/devices/interface/model/@type", "virtio"}}},
      {"q35 with UEFI: OVMF code, the instance's nvram",
       {{"hw_machine_type", "q35"}, {"hw_firmware_type", "uefi"}},
       nothing,
       {{"/domain/os/type/@machine", "q35"},
        {"/domain/os/loader", "/usr/share/OVMF/OVMF_CODE_4M.fd"},
        {"/domain/os/loader/@type", "pflash"},
        {"/domain/os/loader/@readonly", "yes"},
        {"/domain/os/nvram", "(nvram)"},
        {"/domain/os/nvram/@template", "/usr/share/OVMF/OVMF_VARS_4M.fd"}}},
      {"a versioned pc machine with UEFI",
       {{"hw_machine_type", "pc-i440fx-7.2"}, {"hw_firmware_type", "uefi"}},
       nothing,
       {{"/domain/os/type/@machine", "pc-i440fx-7.2"}, {"/domain/os/loader/@secure", "no"}}},
      {"hw_firmware_type=bios writes no loader",
       {{"hw_firmware_type", "bios"}},
       nothing,
       {{"/domain/os/loader", "(absent)"}, {"/domain/os/nvram", "(absent)"}}},
      {"an ISO on a versioned q35 machine: sata cdrom, boot cdrom then hd",
       {{"hw_machine_type", "pc-q35-7.2"}},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "sda"},
        {"/domain/devices/disk[@device='cdrom']/target/@bus", "sata"},
        {"/domain/devices/disk[@device='cdrom']/driver/@type", "raw"},
        {"/domain/devices/disk[@device='cdrom']/source/@file", kIso},
        {"/domain/devices/disk[@device='cdrom']/readonly", ""},
        {"/domain/os/boot[1]/@dev", "cdrom"},
        {"/domain/os/boot[2]/@dev", "hd"}}},
      {"an ISO on pc: the cdrom takes the next IDE name",
       {},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "hda"},
        {"/domain/devices/disk[@device='cdrom']/target/@bus", "ide"}}},
      {"an ISO with hw_disk_bus=ide: the cdrom follows root and swap",
       {{"hw_disk_bus", "ide"}, {"hw_cdrom_bus", "ide"}},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "hdc"}}},
      {"hw_cdrom_bus=scsi adds the virtio-scsi controller for the cdrom alone",
       {{"hw_cdrom_bus", "scsi"}},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "sda"},
        {"/domain/devices/disk[@device='cdrom']/target/@bus", "scsi"},
        {"/domain/devices/controller[@type='scsi']/@model", "virtio-scsi"}}},
      {"hw_cdrom_bus=sata with scsi disks shares the sd names",
       {{"hw_cdrom_bus", "sata"}, {"hw_disk_bus", "scsi"}},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "sdc"},
        {"/domain/devices/disk[@device='cdrom']/target/@bus", "sata"}}},
      {"hw_cdrom_bus=usb keeps the USB controller",
       {{"hw_cdrom_bus", "usb"}},
       with_iso,
       {{"/domain/devices/disk[@device='cdrom']/target/@bus", "usb"},
        {"/domain/devices/controller[@type='usb']", "(absent)"}}},
      {"a kernel image boots directly with Nova's command line",
       {},
       with_kernel,
       {{"/domain/os/kernel", "(kernel)"},
        {"/domain/os/initrd", "(ramdisk)"},
        {"/domain/os/cmdline", "root=/dev/vda console=tty0 console=ttyS0 console=hvc0"},
        {"/domain/os/boot", "(absent)"}}},
      {"a kernel image on qemu with scsi disks and os_command_line",
       {{"os_command_line", "root=/dev/sda1 ro quiet"}, {"hw_disk_bus", "scsi"}},
       [](DomainSpec& spec) {
         with_kernel(spec);
         spec.initrd_path.clear();
         spec.domain_type = "qemu";
       },
       {{"/domain/os/cmdline", "root=/dev/sda1 ro quiet"}, {"/domain/os/initrd", "(absent)"}}},
      {"a kernel image on qemu gets Nova's no_timer_check",
       {},
       [](DomainSpec& spec) {
         with_kernel(spec);
         spec.domain_type = "qemu";
       },
       {{"/domain/os/cmdline", "root=/dev/vda console=tty0 console=ttyS0 console=hvc0 no_timer_check"}}},
      {"os_type=windows on KVM: localtime, Hyper-V enlightenments, hypervclock",
       {{"os_type", "windows"}},
       nothing,
       {{"/domain/clock/@offset", "localtime"},
        {"/domain/clock/timer[@name='hypervclock']/@present", "yes"},
        {"/domain/features/hyperv/relaxed/@state", "on"},
        {"/domain/features/hyperv/spinlocks/@retries", "8191"},
        {"/domain/features/hyperv/ipi/@state", "on"}}},
      {"os_type=windows on qemu: localtime, no Hyper-V (TCG refuses it)",
       {{"os_type", "windows"}},
       [](DomainSpec& spec) { spec.domain_type = "qemu"; },
       {{"/domain/clock/@offset", "localtime"},
        {"/domain/clock/timer", "(absent)"},
        {"/domain/features/hyperv", "(absent)"}}},
      {"os_type=linux keeps UTC",
       {{"os_type", "linux"}},
       nothing,
       {{"/domain/clock/@offset", "utc"}, {"/domain/features/hyperv", "(absent)"}}},
      {"hw_video_model=vga",
       {{"hw_video_model", "vga"}},
       nothing,
       {{"/domain/devices/video/model/@type", "vga"}}},
      {"hw_video_model=cirrus",
       {{"hw_video_model", "cirrus"}},
       nothing,
       {{"/domain/devices/video/model/@type", "cirrus"}}},
      {"hw_video_model=qxl",
       {{"hw_video_model", "qxl"}},
       nothing,
       {{"/domain/devices/video/model/@type", "qxl"}}},
      {"hw_video_model=none",
       {{"hw_video_model", "none"}},
       nothing,
       {{"/domain/devices/video/model/@type", "none"}}},
      {"hw_qemu_guest_agent=yes adds Nova's agent channel",
       {{"hw_qemu_guest_agent", "yes"}},
       nothing,
       {{"/domain/devices/channel[@type='unix']/target/@name", "org.qemu.guest_agent.0"},
        {"/domain/devices/channel/target/@type", "virtio"},
        {"/domain/devices/channel/source/@path", "(agent socket)"}}},
      {"hw_qemu_guest_agent=no adds nothing",
       {{"hw_qemu_guest_agent", "no"}},
       nothing,
       {{"/domain/devices/channel", "(absent)"}}},
      {"hw_boot_menu=true turns the boot menu on",
       {{"hw_boot_menu", "True"}},
       nothing,
       {{"/domain/os/bootmenu/@enable", "yes"}}},
      {"everything at once on q35",
       {{"hw_machine_type", "q35"},
        {"hw_firmware_type", "uefi"},
        {"hw_disk_bus", "scsi"},
        {"hw_vif_model", "e1000e"},
        {"hw_video_model", "qxl"},
        {"hw_qemu_guest_agent", "1"},
        {"hw_boot_menu", "on"},
        {"os_type", "windows"},
        {"img_signature", "ignored: not a hypervisor property"}},
       [](DomainSpec& spec) {
         with_iso(spec);
         spec.ephemeral_disk = kiln::virt::DiskFile{instance_path(spec.uuid, "disk.local"), "qcow2", std::nullopt};
         spec.interfaces = {bridge_nic("fa:16:3e:00:00:0a", "tapaaaa"),
                            ethernet_nic("fa:16:3e:00:00:0b", "tapbbbb")};
       },
       {{"/domain/devices/disk[@device='cdrom']/target/@dev", "sdd"},
        {"/domain/devices/disk[@device='cdrom']/target/@bus", "sata"},
        {"/domain/devices/disk[target/@dev='sdb']/source/@file", "(local)"},
        {"/domain/os/loader/@type", "pflash"},
        {"/domain/devices/interface[@type='ethernet']/model/@type", "e1000e"}}},
      {"os_secure_boot=required: Secure Boot OVMF with SMM on q35, chosen for the image",
       {{"os_secure_boot", "required"}},
       nothing,
       {{"/domain/os/type/@machine", "q35"},
        {"/domain/os/loader", kiln::virt::kOvmfSecureBootCode},
        {"/domain/os/loader/@secure", "yes"},
        {"/domain/os/nvram/@template", kiln::virt::kOvmfSecureBootVariablesTemplate},
        {"/domain/features/smm/@state", "on"}}},
      {"os_secure_boot=disabled or optional changes nothing",
       {{"os_secure_boot", "optional"}, {"hw_firmware_type", "uefi"}},
       nothing,
       {{"/domain/os/loader/@secure", "no"}, {"/domain/features/smm", "(absent)"}}},
      {"Nova's device properties: tablet, watchdog, HPET, PMU, hidden KVM, vmxnet3, bochs",
       {{"hw_pointer_model", "usbtablet"},
        {"hw_input_bus", "usb"},
        {"hw_watchdog_action", "reset"},
        {"hw_time_hpet", "yes"},
        {"hw_pmu", "false"},
        {"img_hide_hypervisor_id", "true"},
        {"hw_vif_model", "vmxnet3"},
        {"hw_video_model", "bochs"},
        {"hw_rng_model", "virtio"},
        {"hw_scsi_model", "virtio-scsi"},
        {"hw_cpu_policy", "shared"},
        {"img_config_drive", "optional"},
        {"hw_architecture", "x86_64"}},
       [](DomainSpec& spec) { spec.interfaces = {bridge_nic("fa:16:3e:00:00:0c", "tapcccc")}; },
       {{"/domain/devices/input[@type='tablet']/@bus", "usb"},
        {"/domain/devices/controller[@type='usb']", "(absent)"},
        {"/domain/devices/watchdog/@model", "i6300esb"},
        {"/domain/devices/watchdog/@action", "reset"},
        {"/domain/clock/timer[@name='hpet']/@present", "yes"},
        {"/domain/features/pmu/@state", "off"},
        {"/domain/features/kvm/hidden/@state", "on"},
        {"/domain/devices/interface/model/@type", "vmxnet3"},
        {"/domain/devices/video/model/@type", "bochs"}}},
      {"hw_watchdog_action=disabled adds no watchdog, a virtio tablet needs no USB",
       {{"hw_watchdog_action", "disabled"}, {"hw_pointer_model", "usbtablet"}, {"hw_input_bus", "virtio"}},
       nothing,
       {{"/domain/devices/watchdog", "(absent)"},
        {"/domain/devices/input[@type='tablet']/@bus", "virtio"},
        {"/domain/devices/controller[@type='usb']/@model", "none"}}},
  };
}

// Placeholders in the table for paths that depend on the row's uuid.
std::string expand(const std::string& expected, const DomainSpec& spec) {
  if (expected == "(root)") return instance_path(spec.uuid, "disk");
  if (expected == "(swap)") return instance_path(spec.uuid, "disk.swap");
  if (expected == "(local)") return instance_path(spec.uuid, "disk.local");
  if (expected == "(nvram)") return instance_path(spec.uuid, "nvram");
  if (expected == "(kernel)") return instance_path(spec.uuid, "kernel");
  if (expected == "(ramdisk)") return instance_path(spec.uuid, "ramdisk");
  if (expected == "(agent socket)")
    return "/var/lib/libvirt/qemu/org.qemu.guest_agent.0." + spec.name + ".sock";
  return expected;
}

DomainSpec spec_with(const Properties& properties) {
  DomainSpec spec = sample_spec(kiln::test::random_uuid());
  kiln::virt::apply_image_properties(properties, spec);
  return spec;
}

}  // namespace

TEST_CASE("the domain XML describes the instance as Nova would for a KVM guest") {
  std::string uuid = kiln::test::random_uuid();
  auto document = parse(kiln::virt::build_domain_xml(sample_spec(uuid)));
  REQUIRE(value_at(document, "/domain/@type") == "kvm");
  REQUIRE(value_at(document, "/domain/uuid") == uuid);
  REQUIRE(value_at(document, "/domain/memory") == "524288");
  REQUIRE(value_at(document, "/domain/memory/@unit") == "KiB");
  REQUIRE(value_at(document, "/domain/vcpu") == "2");
  REQUIRE(value_at(document, "/domain/sysinfo/system/entry[@name='serial']") == uuid);
  REQUIRE(value_at(document, "/domain/os/smbios/@mode") == "sysinfo");
  REQUIRE(value_at(document, "/domain/cpu/@mode") == "host-model");
  REQUIRE(count_at(document, "/domain/features/acpi | /domain/features/apic | /domain/features/vmcoreinfo") ==
          3);
  REQUIRE(value_at(document, "/domain/clock/timer[@name='pit']/@tickpolicy") == "delay");
  REQUIRE(value_at(document, "/domain/clock/timer[@name='rtc']/@tickpolicy") == "catchup");
  REQUIRE(value_at(document, "/domain/clock/timer[@name='hpet']/@present") == "no");
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='vda']/driver/@type") == "qcow2");
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='vda']/driver/@cache") == "none");
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='vdb']/source/@file") ==
          instance_path(uuid, "disk.swap"));
  REQUIRE(value_at(document, "/domain/devices/serial/log/@file") == instance_path(uuid, "console.log"));
  REQUIRE(value_at(document, "/domain/devices/memballoon/@model") == "virtio");
  REQUIRE(value_at(document, "/domain/devices/memballoon/stats/@period") == "10");
  REQUIRE(value_at(document, "/domain/devices/rng/backend") == "/dev/urandom");
}

TEST_CASE("a qemu (TCG) domain asks for no host CPU model and no KVM timers") {
  auto spec = sample_spec(kiln::test::random_uuid());
  spec.domain_type = "qemu";
  auto document = parse(kiln::virt::build_domain_xml(spec));
  REQUIRE(value_at(document, "/domain/@type") == "qemu");
  REQUIRE_FALSE(document.select_node("/domain/cpu"));
  REQUIRE_FALSE(document.select_node("/domain/clock/timer"));
}

TEST_CASE("the same spec always gives the same bytes") {
  auto spec = spec_with({{"hw_machine_type", "q35"}, {"hw_firmware_type", "uefi"}, {"hw_disk_bus", "scsi"}});
  spec.interfaces = {bridge_nic("fa:16:3e:00:00:01", "tap1")};
  with_iso(spec);
  REQUIRE(kiln::virt::build_domain_xml(spec) == kiln::virt::build_domain_xml(spec));
}

TEST_CASE("every row of the image property table gives XML that validates and defines on the test driver") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  auto table = property_table();
  REQUIRE(table.size() >= 15);
  for (const Row& row : table) {
    INFO("row: " << row.what);
    DomainSpec spec = spec_with(row.properties);
    row.adjust(spec);
    std::string xml = kiln::virt::build_domain_xml(spec);
    auto document = parse(xml);
    for (const auto& [xpath, expected] : row.expected) {
      INFO(xpath << "\n" << xml);
      REQUIRE(value_at(document, xpath) == expand(expected, spec));
    }
    require_valid_for_libvirt(scratch, xml);
    auto domain = libvirt.define(xml);
    REQUIRE(domain.uuid() == spec.uuid);
    domain.undefine();
  }
}

TEST_CASE("disk targets follow the bus in the order root, ephemeral, swap, cdroms") {
  auto spec = spec_with({{"hw_disk_bus", "sata"}, {"hw_cdrom_bus", "sata"}});
  spec.ephemeral_disk = kiln::virt::DiskFile{instance_path(spec.uuid, "disk.local"), "qcow2", std::nullopt};
  spec.cdrom_images = {"/srv/first.iso", "/srv/second.iso"};
  auto document = parse(kiln::virt::build_domain_xml(spec));
  std::vector<std::string> targets;
  for (auto node : document.select_nodes("/domain/devices/disk/target/@dev")) {
    targets.push_back(node.attribute().value());
  }
  REQUIRE(targets == std::vector<std::string>{"sda", "sdb", "sdc", "sdd", "sde"});
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='sde']/source/@file") == "/srv/second.iso");
  REQUIRE(value_at(document, "/domain/os/boot/@dev") == "hd");
}

TEST_CASE(
    "image property values outside the allow-list are refused, naming the property and the allowed values") {
  struct Refusal {
    Properties properties;
    std::string mentions;
  };
  std::vector<Refusal> refusals = {
      {{{"hw_disk_bus", "nvme"}},
       "image property hw_disk_bus 'nvme' is not supported; allowed values are virtio, scsi, sata, ide, usb"},
      {{{"hw_disk_bus", "VIRTIO"}}, "hw_disk_bus 'VIRTIO'"},
      {{{"hw_cdrom_bus", "virtio"}},
       "hw_cdrom_bus 'virtio' is not supported; allowed values are ide, sata, scsi, usb"},
      {{{"hw_vif_model", "rtl8029"}}, "allowed values are virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet, vmxnet3"},
      {{{"hw_machine_type", "isapc"}}, "allowed values are pc, q35, pc-i440fx-<version>, pc-q35-<version>"},
      {{{"hw_machine_type", "pc-i440fx-"}}, "hw_machine_type 'pc-i440fx-'"},
      {{{"hw_machine_type", "pc-q35-7.2' /><devices"}}, "hw_machine_type"},
      {{{"hw_firmware_type", "efi"}},
       "hw_firmware_type 'efi' is not supported; allowed values are bios, uefi"},
      {{{"hw_video_model", "ati"}}, "allowed values are virtio, vga, cirrus, qxl, vmvga, bochs, none"},
      {{{"hw_qemu_guest_agent", "maybe"}},
       "hw_qemu_guest_agent 'maybe' is not a boolean; allowed values are yes"},
      {{{"hw_boot_menu", "2"}}, "image property hw_boot_menu '2' is not a boolean"},
      {{{"os_type", "freebsd"}}, "os_type 'freebsd' is not supported; allowed values are linux, windows"},
      {{{"os_command_line", "console=ttyS0\nroot=/dev/vda"}},
       "'console=ttyS0\\x0aroot=/dev/vda' has characters other than printable ASCII"},
      {{{"os_command_line", std::string(3000, 'x')}}, "is 3000 bytes long; Linux accepts at most 2048"},
      {{{"hw_disk_bus", "ide"}, {"hw_machine_type", "q35"}},
       "image property hw_disk_bus 'ide' cannot be used with image property hw_machine_type 'q35': "
       "q35 has no IDE controller; allowed values there are virtio, scsi, sata, usb"},
      {{{"hw_cdrom_bus", "ide"}, {"hw_machine_type", "pc-q35-7.2"}},
       "hw_cdrom_bus 'ide' cannot be used with image property hw_machine_type 'pc-q35-7.2'"},
  };
  for (const Refusal& refusal : refusals) {
    DomainSpec spec = sample_spec(kiln::test::random_uuid());
    std::string before = kiln::virt::build_domain_xml(spec);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::apply_image_properties(refusal.properties, spec),
                                ErrorCode::kInvalidArgument, refusal.mentions);
    REQUIRE(kiln::virt::build_domain_xml(spec) == before);
  }
}

TEST_CASE("a q35 cdrom defaults to sata, a pc one to ide, and a long bad value is cut in the message") {
  REQUIRE(kiln::virt::effective_cdrom_bus(spec_with({{"hw_machine_type", "q35"}})) == "sata");
  REQUIRE(kiln::virt::effective_cdrom_bus(spec_with({{"hw_machine_type", "pc-i440fx-7.2"}})) == "ide");
  REQUIRE(kiln::virt::effective_cdrom_bus(spec_with({})) == "ide");
  REQUIRE_KILN_ERROR_MENTIONS(spec_with({{"hw_disk_bus", std::string(500, 'a')}}),
                              ErrorCode::kInvalidArgument, std::string(64, 'a') + "...'");
  // A spec that chose ide itself is refused by the builder once q35 arrives.
  auto spec = sample_spec(kiln::test::random_uuid());
  spec.cdrom_bus = "ide";
  spec.cdrom_images = {kIso};
  spec.machine_type = "q35";
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument,
                              "q35 has no IDE controller");
}

TEST_CASE("network interfaces need a unicast MAC and Linux interface names") {
  struct Refusal {
    NetworkInterface nic;
    std::string mentions;
  };
  std::vector<Refusal> refusals = {
      {{"user", "", "fa:16:3e:00:00:01", "", ""},
       "interface type 'user' is not supported; allowed values are bridge, ethernet"},
      {{"bridge", "", "fa:16:3e:00:00:01", "", ""}, "a bridge interface needs the name of its bridge"},
      {{"ethernet", "br0", "fa:16:3e:00:00:01", "", ""}, "an ethernet interface joins no bridge"},
      {ethernet_nic("01:00:5e:00:00:01", ""), "is a multicast address"},
      {ethernet_nic("ff:ff:ff:ff:ff:ff", ""), "is a multicast address"},
      {ethernet_nic("00:00:00:00:00:00", ""), "is not a NIC's address"},
      {ethernet_nic("fa:16:3e:00:00", ""), "is not six colon-separated hex octets"},
      {ethernet_nic("fa-16-3e-00-00-01", ""), "is not six colon-separated hex octets"},
      {ethernet_nic("fa:16:3e:00:00:0g", ""), "is not six colon-separated hex octets"},
      {bridge_nic("fa:16:3e:00:00:01", "tap-name-too-long"),
       "tap name 'tap-name-too-long' is not a Linux interface name"},
      {{"bridge", "br0;reboot", "fa:16:3e:00:00:01", "", ""},
       "bridge name 'br0;reboot' is not a Linux interface name"},
      {{"bridge", "..", "fa:16:3e:00:00:01", "", ""}, "bridge name '..' is not a Linux interface name"},
      {ethernet_nic("fa:16:3e:00:00:01", "tap/0"), "tap name 'tap/0'"},
      {ethernet_nic("fa:16:3e:00:00:01", "vnet7"), "starts with 'vnet', which libvirt reserves"},
      {ethernet_nic("fa:16:3e:00:00:01", "macvtap0"), "which libvirt reserves"},
      {ethernet_nic("fa:16:3e:00:00:01", "tap0", "virtio-net"),
       "interface model 'virtio-net' is not supported"},
  };
  for (const Refusal& refusal : refusals) {
    REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::check_network_interface(refusal.nic), ErrorCode::kInvalidArgument,
                                refusal.mentions);
    auto spec = sample_spec(kiln::test::random_uuid());
    spec.interfaces = {refusal.nic};
    REQUIRE_KILN_ERROR(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument);
  }
  REQUIRE_NOTHROW(kiln::virt::check_network_interface(bridge_nic("fa:16:3e:00:00:01", "tap_a.b-15chars")));

  auto spec = sample_spec(kiln::test::random_uuid());
  spec.interfaces = {ethernet_nic("fa:16:3e:00:00:01", "tap1"), ethernet_nic("FA:16:3E:00:00:01", "tap2")};
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument,
                              "is used by two interfaces");
  spec.interfaces = {ethernet_nic("fa:16:3e:00:00:01", "tap1"), ethernet_nic("fa:16:3e:00:00:02", "tap1")};
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument,
                              "tap name 'tap1' is used by two interfaces");
}

TEST_CASE("a spec that cannot become a bootable domain is refused, naming what is wrong") {
  using Change = std::function<void(DomainSpec&)>;
  std::vector<std::pair<Change, std::string>> refusals = {
      {[](DomainSpec& spec) { spec.root_disk.reset(); }, "the domain has no root disk"},
      {[](DomainSpec& spec) {
         spec.firmware = "uefi";
         spec.nvram_path.clear();
       },
       "UEFI firmware needs the instance's nvram path"},
      {[](DomainSpec& spec) { spec.root_disk->path = "disk"; },
       "root disk path 'disk' is not an absolute path"},
      {[](DomainSpec& spec) { spec.swap_disk->format = "vmdk"; }, "swap disk format 'vmdk' is not supported"},
      {[](DomainSpec& spec) { spec.initrd_path = "/boot/initrd"; }, "an initrd needs a kernel"},
      {[](DomainSpec& spec) { spec.boot_from_cdrom = true; }, "booting from cdrom needs a cdrom image"},
      {[](DomainSpec& spec) { spec.domain_type = "xen"; }, "domain type 'xen' is not supported"},
      {[](DomainSpec& spec) { spec.uuid = "not-a-uuid"; }, "is not a canonical UUID"},
      {[](DomainSpec& spec) { spec.display_name = "web\x01"; },
       "display name 'web\\x01' has a control character"},
      {[](DomainSpec& spec) { spec.cache_mode = "sometimes"; }, "cache mode 'sometimes' is not supported"},
      {[](DomainSpec& spec) {
         spec.disk_bus = "ide";
         spec.ephemeral_disk = kiln::virt::DiskFile{"/srv/disk.local", "qcow2", std::nullopt};
         spec.cdrom_images = {"/srv/a.iso", "/srv/b.iso"};
       },
       "5 devices on the ide bus, which holds at most 4 (hda to hdd)"},
      {[](DomainSpec& spec) {
         spec.guest_agent = true;
         spec.name = std::string(70, 'n');
       },
       "too long for the guest agent's socket path"},
  };
  for (const auto& [change, mentions] : refusals) {
    auto spec = sample_spec(kiln::test::random_uuid());
    change(spec);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument, mentions);
  }
}

TEST_CASE("Nova image properties kiln cannot honour are refused with unsupported_image_property, naming them") {
  std::vector<std::pair<Properties, std::string>> refused = {
      {{{"hw_cpu_policy", "dedicated"}}, "hw_cpu_policy 'dedicated'"},
      {{{"hw_mem_page_size", "large"}}, "hw_mem_page_size 'large'"},
      {{{"img_config_drive", "mandatory"}}, "img_config_drive 'mandatory'"},
      {{{"hw_architecture", "aarch64"}}, "hw_architecture 'aarch64'"},
      {{{"hw_numa_nodes", "2"}}, "hw_numa_nodes '2'"},
      {{{"hw_numa_cpus.0", "0-1"}}, "hw_numa_cpus.0"},
      {{{"hw_cpu_sockets", "2"}}, "hw_cpu_sockets '2'"},
      {{{"hw_tpm_version", "2.0"}}, "hw_tpm_version '2.0'"},
      {{{"hw_vif_multiqueue_enabled", "true"}}, "hw_vif_multiqueue_enabled 'true'"},
      {{{"hw_rng_model", "egd"}}, "hw_rng_model 'egd'"},
      {{{"hw_scsi_model", "lsilogic"}}, "hw_scsi_model 'lsilogic'"},
      {{{"hw_vif_model", "netfront"}}, "hw_vif_model 'netfront'"},
      {{{"hw_video_model", "gop"}}, "hw_video_model 'gop'"},
      {{{"os_secure_boot", "required"}, {"hw_machine_type", "pc"}}, "needs a q35 machine"},
      {{{"os_secure_boot", "required"}, {"hw_firmware_type", "bios"}}, "needs hw_firmware_type uefi"},
  };
  for (const auto& [properties, mentions] : refused) {
    INFO(mentions);
    DomainSpec spec = sample_spec(kiln::test::random_uuid());
    DomainSpec before = spec;
    REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::apply_image_properties(properties, spec),
                                ErrorCode::kUnsupportedImageProperty, mentions);
    REQUIRE(kiln::virt::build_domain_xml(spec) == kiln::virt::build_domain_xml(before));
  }
  // Values outside what Nova itself accepts stay invalid_argument.
  DomainSpec spec = sample_spec(kiln::test::random_uuid());
  REQUIRE_KILN_ERROR(kiln::virt::apply_image_properties({{"hw_pointer_model", "mouse"}}, spec),
                     ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(kiln::virt::apply_image_properties({{"os_secure_boot", "maybe"}}, spec),
                     ErrorCode::kInvalidArgument);
}

TEST_CASE("libvirt defines, starts, reports, destroys and undefines the domain (test driver)") {
  kiln::virt::Connection libvirt("test:///default");
  std::string uuid = kiln::test::random_uuid();
  auto domain = libvirt.define(kiln::virt::build_domain_xml(sample_spec(uuid)));
  REQUIRE(domain.uuid() == uuid);
  REQUIRE(domain.state() == "shut off");
  domain.start();
  REQUIRE(domain.state() == "running");
  REQUIRE(libvirt.lookup_by_uuid(uuid).has_value());
  domain.destroy();
  domain.undefine();
  REQUIRE_FALSE(libvirt.lookup_by_uuid(uuid).has_value());
}

TEST_CASE("a domain undefined after it was listed has no state, and a listing beside the delete skips it") {
  kiln::virt::Connection libvirt("test:///default");
  std::string uuid = kiln::test::random_uuid();
  libvirt.define(kiln::virt::build_domain_xml(sample_spec(uuid)));
  std::vector<kiln::virt::Domain> listed = libvirt.list_domains();
  auto it = std::find_if(listed.begin(), listed.end(), [&](const auto& domain) { return domain.uuid() == uuid; });
  REQUIRE(it != listed.end());
  REQUIRE(it->state_unless_undefined() == "shut off");
  libvirt.lookup_by_uuid(uuid)->undefine();  // a delete between the listing and the read
  REQUIRE_FALSE(it->state_unless_undefined().has_value());
  REQUIRE_KILN_ERROR_MENTIONS(it->state(), kiln::ErrorCode::kLibvirtError, "cannot read the state");
}

TEST_CASE("libvirt's refusal carries its code and message") {
  kiln::virt::Connection libvirt("test:///default");
  REQUIRE_KILN_ERROR_MENTIONS(libvirt.define("<domain type='kvm'><name>x</name></domain>"),
                              ErrorCode::kLibvirtError, "libvirt error");
  REQUIRE_KILN_ERROR(kiln::virt::Connection("nonsense:///nowhere"), ErrorCode::kLibvirtError);
}

namespace {

kiln::virt::RbdSource sample_rbd(const std::string& uuid) {
  return {"vms/" + uuid + "_disk", {{"127.0.0.1", 16789}, {"10.0.0.2", 6789}}, "kiln",
          "5c9d1c8e-2f1e-4a7b-9c3d-0e1f2a3b4c5d"};
}

}  // namespace

TEST_CASE("an RBD root disk is a network disk with its monitors and the ceph secret, and defines on the test driver") {
  kiln::test::ScratchDir scratch;
  std::string uuid = kiln::test::random_uuid();
  DomainSpec spec = sample_spec(uuid);
  spec.root_disk = kiln::virt::DiskFile{"", "raw", sample_rbd(uuid)};
  std::string xml = kiln::virt::build_domain_xml(spec);
  INFO(xml);
  auto document = parse(xml);
  const std::string disk = "/domain/devices/disk[target/@dev='vda']";
  REQUIRE(value_at(document, disk + "/@type") == "network");
  REQUIRE(value_at(document, disk + "/@device") == "disk");
  REQUIRE(value_at(document, disk + "/driver/@type") == "raw");
  REQUIRE(value_at(document, disk + "/driver/@cache") == "writeback");
  REQUIRE(value_at(document, disk + "/source/@protocol") == "rbd");
  REQUIRE(value_at(document, disk + "/source/@name") == "vms/" + uuid + "_disk");
  REQUIRE(count_at(document, disk + "/source/host") == 2);
  REQUIRE(value_at(document, disk + "/source/host[1]/@name") == "127.0.0.1");
  REQUIRE(value_at(document, disk + "/source/host[1]/@port") == "16789");
  REQUIRE(value_at(document, disk + "/source/host[2]/@port") == "6789");
  REQUIRE(value_at(document, disk + "/auth/@username") == "kiln");
  REQUIRE(value_at(document, disk + "/auth/secret/@type") == "ceph");
  REQUIRE(value_at(document, disk + "/auth/secret/@uuid") == "5c9d1c8e-2f1e-4a7b-9c3d-0e1f2a3b4c5d");
  REQUIRE(value_at(document, disk + "/target/@bus") == "virtio");
  REQUIRE(count_at(document, disk + "/source/@file") == 0);
  // The swap file beside it keeps the host's cache mode and stays a file.
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='vdb']/@type") == "file");
  REQUIRE(value_at(document, "/domain/devices/disk[target/@dev='vdb']/driver/@cache") == "none");
  require_valid_for_libvirt(scratch, xml);
  // libvirt's own parser keeps the network source as written.
  kiln::virt::Connection libvirt("test:///default");
  auto domain = libvirt.define(xml);
  REQUIRE(domain.uuid() == uuid);
  auto defined = parse(domain.xml());
  REQUIRE(value_at(defined, disk + "/@type") == "network");
  REQUIRE(value_at(defined, disk + "/source/@name") == "vms/" + uuid + "_disk");
  REQUIRE(value_at(defined, disk + "/source/host[1]/@port") == "16789");
  REQUIRE(value_at(defined, disk + "/auth/secret/@uuid") == "5c9d1c8e-2f1e-4a7b-9c3d-0e1f2a3b4c5d");
  domain.undefine();
}

TEST_CASE("an RBD disk whose names could break out of the XML or QEMU's rbd options is refused") {
  std::string uuid = kiln::test::random_uuid();
  auto refused = [&](const std::function<void(kiln::virt::RbdSource&)>& change, const std::string& mention) {
    DomainSpec spec = sample_spec(uuid);
    kiln::virt::RbdSource rbd = sample_rbd(uuid);
    change(rbd);
    spec.root_disk = kiln::virt::DiskFile{"", "raw", rbd};
    REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument, mention);
  };
  refused([](auto& rbd) { rbd.name = "vms"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "vms/a/b"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "vms/x:id=admin"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "vms/x@snap"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "vms/x'/><disk"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "vms/x\ny"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.name = "/x"; }, "<pool>/<image>");
  refused([](auto& rbd) { rbd.monitors.clear(); }, "no Ceph monitor");
  refused([](auto& rbd) { rbd.monitors[0].host = "127.0.0.1\"/><x"; }, "monitor host");
  refused([](auto& rbd) { rbd.monitors[0].host = ""; }, "monitor host");
  refused([](auto& rbd) { rbd.monitors[0].port = 0; }, "monitor port");
  refused([](auto& rbd) { rbd.monitors[0].port = 65536; }, "monitor port");
  refused([](auto& rbd) { rbd.username = "kiln:key=x"; }, "Ceph user");
  refused([](auto& rbd) { rbd.username = ""; }, "Ceph user");
  refused([](auto& rbd) { rbd.secret_uuid = "not-a-uuid"; }, "secret uuid");
  DomainSpec spec = sample_spec(uuid);
  spec.root_disk = kiln::virt::DiskFile{"/var/lib/kiln/disk", "raw", sample_rbd(uuid)};
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument, "at once");
  spec.root_disk = kiln::virt::DiskFile{"", "qcow2", sample_rbd(uuid)};
  REQUIRE_KILN_ERROR_MENTIONS(kiln::virt::build_domain_xml(spec), ErrorCode::kInvalidArgument, "raw");
}
