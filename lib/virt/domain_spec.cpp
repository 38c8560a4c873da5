#include "kiln/virt/domain_spec.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "checks.h"
#include "disk_plan.h"
#include "kiln/util/error.h"
#include "kiln/util/uuid.h"

namespace kiln::virt {

using detail::quoted;
using detail::refuse;
using detail::require_one_of;

namespace {

constexpr std::size_t kMaxInterfaceName = 15;  // IFNAMSIZ less the terminating NUL
constexpr std::size_t kMaxDomainName = 255;
constexpr std::size_t kMaxIdeDevices = 4;        // two channels, master and slave: hda to hdd
constexpr std::size_t kMaxUnixSocketPath = 107;  // sun_path less the terminating NUL
// Names libvirt generates for taps itself and therefore drops from a
// definition (virDomainNetDefParseXML): a tap called so would be renamed.
constexpr std::array<std::string_view, 3> kReservedTapPrefixes{"vnet", "macvtap", "macvlan"};

// XML 1.0 cannot carry C0 control characters, and no name or path needs one.
bool has_control_character(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

void require_text(const std::string& what, const std::string& value) {
  if (has_control_character(value)) refuse(what + " " + quoted(value) + " has a control character");
}

void require_absolute_path(const std::string& what, const std::string& path) {
  if (path.empty() || path.front() != '/') refuse(what + " " + quoted(path) + " is not an absolute path");
  require_text(what, path);
}

void check_identity(const DomainSpec& spec) {
  require_one_of("domain type", spec.domain_type, kDomainTypes);
  if (spec.name.empty() || spec.name.size() > kMaxDomainName) {
    refuse("domain name must be 1 to 255 characters long");
  }
  if (spec.name.find('/') != std::string::npos) refuse("domain name " + quoted(spec.name) + " has a '/'");
  require_text("domain name", spec.name);
  if (!is_canonical_uuid(spec.uuid)) refuse("domain uuid " + quoted(spec.uuid) + " is not a canonical UUID");
  if (spec.memory_mb == 0) refuse("memory_mb must be at least 1");
  if (spec.vcpus == 0) refuse("vcpus must be at least 1");
  if (!detail::is_supported_machine_type(spec.machine_type)) {
    refuse("machine type " + quoted(spec.machine_type) + " is not supported; allowed values are " +
           detail::kMachineTypeListing);
  }
  require_one_of("os type", spec.os_type, kOsTypes);
  require_text("display name", spec.display_name);
  require_text("image id", spec.image_id);
  require_absolute_path("console log", spec.console_log);
}

// What a Ceph name may hold here: QEMU's rbd: filename separates options
// with ':' (escaped with '\\'), RBD separates pool, image and snapshot with
// '/' and '@', and none of Glance's or nova's names needs a space or a control.
bool is_plain_ceph_name(std::string_view name) {
  return !name.empty() && name.size() <= 255 && std::none_of(name.begin(), name.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte <= 0x20 || byte >= 0x7f || c == '/' || c == '@' || c == ':' || c == '\\' || c == '\'' ||
           c == '"' || c == '<' || c == '>' || c == '&';
  });
}

void check_rbd_source(const std::string& what, const RbdSource& rbd) {
  auto slash = rbd.name.find('/');
  if (slash == std::string::npos || !is_plain_ceph_name(rbd.name.substr(0, slash)) ||
      !is_plain_ceph_name(rbd.name.substr(slash + 1))) {
    refuse(what + " RBD name " + quoted(rbd.name) + " is not <pool>/<image> of plain Ceph names");
  }
  if (rbd.monitors.empty()) refuse(what + " has no Ceph monitor");
  for (const CephMonitor& monitor : rbd.monitors) {
    bool plain = !monitor.host.empty() && monitor.host.size() <= 253 &&
                 std::all_of(monitor.host.begin(), monitor.host.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':';
                 });
    if (!plain) refuse(what + " monitor host " + quoted(monitor.host) + " is not an address or a DNS name");
    if (monitor.port < 1 || monitor.port > 65535) {
      refuse(what + " monitor port " + std::to_string(monitor.port) + " is out of range");
    }
  }
  if (!is_plain_ceph_name(rbd.username)) refuse(what + " Ceph user " + quoted(rbd.username) + " is not a plain name");
  if (!is_canonical_uuid(rbd.secret_uuid)) {
    refuse(what + " secret uuid " + quoted(rbd.secret_uuid) + " is not a canonical UUID");
  }
}

void check_disk_file(const std::string& what, const std::optional<DiskFile>& file) {
  if (!file) return;
  if (file->rbd) {
    if (!file->path.empty()) refuse(what + " is an RBD image and a file at once");
    if (file->format != "raw") refuse(what + " is an RBD image, which is raw, not " + quoted(file->format));
    check_rbd_source(what, *file->rbd);
    return;
  }
  require_absolute_path(what + " path", file->path);
  require_one_of(what + " format", file->format, kDiskFormats);
}

// q35 has no IDE controller, and a pc's two IDE channels hold four devices.
void check_ide_devices(const DomainSpec& spec) {
  std::vector<detail::PlannedDisk> planned = detail::plan_disks(spec);
  std::size_t ide = std::count_if(planned.begin(), planned.end(),
                                  [](const detail::PlannedDisk& disk) { return disk.bus == "ide"; });
  if (ide > 0 && is_q35(spec.machine_type)) {
    refuse("the ide bus cannot be used with machine type " + quoted(spec.machine_type) +
           ": q35 has no IDE controller; use sata, scsi, usb or (for disks) virtio");
  }
  if (ide > kMaxIdeDevices) {
    refuse(std::to_string(ide) + " devices on the ide bus, which holds at most 4 (hda to hdd)");
  }
}

void check_disks(const DomainSpec& spec) {
  require_one_of("disk bus", spec.disk_bus, kDiskBuses);
  if (!spec.cdrom_bus.empty()) require_one_of("cdrom bus", spec.cdrom_bus, kCdromBuses);
  require_one_of("cache mode", spec.cache_mode, kCacheModes);
  if (!spec.root_disk) refuse("the domain has no root disk");
  check_disk_file("root disk", spec.root_disk);
  check_disk_file("ephemeral disk", spec.ephemeral_disk);
  check_disk_file("swap disk", spec.swap_disk);
  for (const std::string& image : spec.cdrom_images) require_absolute_path("cdrom image", image);
  check_ide_devices(spec);
}

void check_boot(const DomainSpec& spec) {
  if (spec.boot_from_cdrom && spec.cdrom_images.empty()) refuse("booting from cdrom needs a cdrom image");
  if (spec.kernel_path.empty()) {
    if (!spec.initrd_path.empty()) refuse("an initrd needs a kernel: kernel_path is empty");
    return;
  }
  require_absolute_path("kernel", spec.kernel_path);
  if (!spec.initrd_path.empty()) require_absolute_path("initrd", spec.initrd_path);
  detail::require_command_line("kernel command line", spec.kernel_command_line);
}

void check_firmware(const DomainSpec& spec) {
  require_one_of("firmware", spec.firmware, kFirmwareTypes);
  if (spec.secure_boot && (spec.firmware != "uefi" || !is_q35(spec.machine_type))) {
    refuse("Secure Boot needs UEFI firmware on a q35 machine");
  }
  if (!spec.input_bus.empty()) require_one_of("input bus", spec.input_bus, kInputBuses);
  if (!spec.watchdog_action.empty()) require_one_of("watchdog action", spec.watchdog_action, kWatchdogActions);
  if (spec.firmware != "uefi") return;
  require_absolute_path("UEFI firmware code", spec.firmware_code);
  require_absolute_path("UEFI variables template", spec.firmware_variables_template);
  if (spec.nvram_path.empty()) refuse("UEFI firmware needs the instance's nvram path");
  require_absolute_path("nvram path", spec.nvram_path);
}

void check_interfaces(const DomainSpec& spec) {
  require_one_of("interface model", spec.interface_model, kInterfaceModels);
  std::set<std::string> macs;
  std::set<std::string> taps;
  for (const NetworkInterface& nic : spec.interfaces) {
    check_network_interface(nic);
    std::string mac = nic.mac;
    std::transform(mac.begin(), mac.end(), mac.begin(), [](unsigned char c) { return std::tolower(c); });
    if (!macs.insert(mac).second) refuse("MAC address " + quoted(mac) + " is used by two interfaces");
    if (!nic.tap.empty() && !taps.insert(nic.tap).second) {
      refuse("tap name " + quoted(nic.tap) + " is used by two interfaces");
    }
  }
}

void check_devices(const DomainSpec& spec) {
  require_one_of("video model", spec.video_model, kVideoModels);
  if (spec.guest_agent && detail::guest_agent_socket_path(spec.name).size() > kMaxUnixSocketPath) {
    refuse("domain name " + quoted(spec.name) + " is too long for the guest agent's socket path " +
           "(at most 107 bytes)");
  }
}

bool is_hex_digit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// "fa:16:3e:12:34:56": six octets, the group bit (multicast) of the first
// clear, not all zeros.
void check_mac(const std::string& mac) {
  bool shaped = mac.size() == 17;
  for (std::size_t i = 0; shaped && i < mac.size(); ++i) {
    shaped = i % 3 == 2 ? mac[i] == ':' : is_hex_digit(mac[i]);
  }
  if (!shaped) refuse("MAC address " + quoted(mac) + " is not six colon-separated hex octets");
  if (std::stoul(mac.substr(0, 2), nullptr, 16) & 1) {
    refuse("MAC address " + quoted(mac) + " is a multicast address; a NIC needs a unicast one");
  }
  if (mac == "00:00:00:00:00:00") refuse("MAC address 00:00:00:00:00:00 is not a NIC's address");
}

bool is_interface_name_character(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
}

void check_interface_name(const std::string& what, const std::string& name) {
  bool valid = !name.empty() && name.size() <= kMaxInterfaceName && name != "." && name != ".." &&
               std::all_of(name.begin(), name.end(), is_interface_name_character);
  if (!valid) {
    refuse(what + " " + quoted(name) +
           " is not a Linux interface name (1 to 15 of A-Z a-z 0-9 _ . -, not . or ..)");
  }
}

}  // namespace

bool is_q35(const std::string& machine_type) {
  return machine_type == "q35" || machine_type.starts_with("pc-q35-");
}

std::string effective_cdrom_bus(const DomainSpec& spec) {
  if (!spec.cdrom_bus.empty()) return spec.cdrom_bus;
  return is_q35(spec.machine_type) ? "sata" : "ide";
}

void check_network_interface(const NetworkInterface& nic) {
  require_one_of("interface type", nic.type, kInterfaceTypes);
  if (nic.type == "bridge") {
    if (nic.bridge.empty()) refuse("a bridge interface needs the name of its bridge");
    check_interface_name("bridge name", nic.bridge);
  } else if (!nic.bridge.empty()) {
    refuse("an ethernet interface joins no bridge, yet bridge " + quoted(nic.bridge) + " is given");
  }
  check_mac(nic.mac);
  if (!nic.tap.empty()) {
    check_interface_name("tap name", nic.tap);
    for (std::string_view prefix : kReservedTapPrefixes) {
      if (nic.tap.starts_with(prefix)) {
        refuse("tap name " + quoted(nic.tap) + " starts with '" + std::string(prefix) +
               "', which libvirt reserves for names it generates");
      }
    }
  }
  if (!nic.model.empty()) require_one_of("interface model", nic.model, kInterfaceModels);
}

void check_domain_spec(const DomainSpec& spec) {
  check_identity(spec);
  check_disks(spec);
  check_boot(spec);
  check_firmware(spec);
  check_interfaces(spec);
  check_devices(spec);
}

std::string domain_name_from_template(const std::string& name_template, const std::string& uuid) {
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::kInvalidArgument, "instance name template " + quoted(name_template) + " " + why);
  };
  std::string name;
  int uuids = 0;
  for (std::size_t i = 0; i < name_template.size(); ++i) {
    if (name_template[i] != '%') {
      name += name_template[i];
      continue;
    }
    std::string_view rest = std::string_view(name_template).substr(i);
    if (rest.starts_with("%%")) {
      name += '%';
      i += 1;
    } else if (rest.starts_with("%(uuid)s")) {
      name += uuid;
      i += 7;
      ++uuids;
    } else if (rest.starts_with("%s")) {
      name += uuid;
      i += 1;
      ++uuids;
    } else {
      bad("has a conversion other than %(uuid)s, %s or %%: kiln names domains by uuid");
    }
  }
  if (uuids != 1) bad("must hold the instance's uuid exactly once, as %(uuid)s or %s, so every domain name is unique");
  if (name.size() > kMaxDomainName) bad("makes a domain name longer than 255 bytes");
  if (name.find('/') != std::string::npos || has_control_character(name)) bad("makes a domain name with '/' or a control character");
  return name;
}

}  // namespace kiln::virt
