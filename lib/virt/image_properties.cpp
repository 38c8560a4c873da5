#include "kiln/virt/image_properties.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "checks.h"

namespace kiln::virt {

using detail::quoted;
using detail::refuse;
using detail::require_one_of;

namespace {

// oslo strutils.bool_from_string, which Nova's image metadata uses, minus
// its habit of reading anything unknown as false.
constexpr std::array<std::string_view, 6> kTrueWords{"yes", "true", "on", "y", "t", "1"};
constexpr std::array<std::string_view, 6> kFalseWords{"no", "false", "off", "n", "f", "0"};
constexpr std::array<std::string_view, 3> kCdromBusesOnQ35{"sata", "scsi", "usb"};
constexpr std::array<std::string_view, 4> kDiskBusesOnQ35{"virtio", "scsi", "sata", "usb"};

std::string property(const std::string& name) { return "image property " + name; }

bool boolean_property(const std::string& name, const std::string& value) {
  std::string word = value;
  std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
  if (detail::is_one_of(word, kTrueWords)) return true;
  if (detail::is_one_of(word, kFalseWords)) return false;
  refuse(property(name) + " " + quoted(value) + " is not a boolean; allowed values are " +
         detail::listing(kTrueWords) + ", " + detail::listing(kFalseWords) + " (any case)");
}

using Applier = void (*)(const std::string& name, const std::string& value, DomainSpec& spec);

const std::map<std::string_view, Applier>& appliers() {
  static const std::map<std::string_view, Applier> table = {
      {"hw_disk_bus",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kDiskBuses);
         spec.disk_bus = value;
       }},
      {"hw_cdrom_bus",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kCdromBuses);
         spec.cdrom_bus = value;
       }},
      {"hw_vif_model",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kInterfaceModels);
         spec.interface_model = value;
       }},
      {"hw_machine_type",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         if (!detail::is_supported_machine_type(value)) {
           refuse(property(name) + " " + quoted(value) + " is not supported; allowed values are " +
                  detail::kMachineTypeListing);
         }
         spec.machine_type = value;
       }},
      {"hw_firmware_type",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kFirmwareTypes);
         spec.firmware = value;
       }},
      {"hw_video_model",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kVideoModels);
         spec.video_model = value;
       }},
      {"hw_qemu_guest_agent",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         spec.guest_agent = boolean_property(name, value);
       }},
      {"hw_boot_menu",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         spec.boot_menu = boolean_property(name, value);
       }},
      {"os_type",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kOsTypes);
         spec.os_type = value;
       }},
      {"os_command_line",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         // Nova treats an empty command line as none given.
         if (value.empty()) return;
         detail::require_command_line(property(name), value);
         spec.kernel_command_line = value;
       }},
  };
  return table;
}

// "image property hw_disk_bus 'ide'" when the image chose the value, else
// "disk bus 'ide'" (the caller's choice), so the refusal names its source.
std::string origin(const std::map<std::string, std::string>& properties, const std::string& name,
                   const std::string& field, const std::string& value) {
  return properties.contains(name) ? property(name) + " " + quoted(value) : field + " " + quoted(value);
}

// Nova leaves an IDE device on q35 to fail in libvirt; kiln says why up front.
// A cdrom bus left unset already follows the machine (sata on q35).
void check_buses_fit_machine(const std::map<std::string, std::string>& properties,
                             const DomainSpec& spec) {
  if (!is_q35(spec.machine_type)) return;
  std::string machine = origin(properties, "hw_machine_type", "machine type", spec.machine_type);
  if (spec.disk_bus == "ide") {
    refuse(origin(properties, "hw_disk_bus", "disk bus", spec.disk_bus) + " cannot be used with " +
           machine + ": q35 has no IDE controller; allowed values there are " +
           detail::listing(kDiskBusesOnQ35));
  }
  if (spec.cdrom_bus == "ide") {
    refuse(origin(properties, "hw_cdrom_bus", "cdrom bus", spec.cdrom_bus) + " cannot be used with " +
           machine + ": q35 has no IDE controller; allowed values there are " +
           detail::listing(kCdromBusesOnQ35));
  }
}

}  // namespace

void apply_image_properties(const std::map<std::string, std::string>& properties, DomainSpec& spec) {
  DomainSpec updated = spec;
  for (const auto& [name, value] : properties) {
    auto applier = appliers().find(name);
    if (applier != appliers().end()) applier->second(name, value, updated);
  }
  check_buses_fit_machine(properties, updated);
  spec = std::move(updated);
}

}  // namespace kiln::virt
