#include "kiln/virt/image_properties.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <span>
#include <vector>
#include <string_view>

#include "checks.h"
#include "kiln/util/error.h"

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
  refuse(property(name) + " " + detail::quoted(value) + " is not a boolean; allowed values are " +
         detail::listing(kTrueWords) + ", " + detail::listing(kFalseWords) + " (any case)");
}

[[noreturn]] void unsupported(const std::string& name, const std::string& value, const std::string& why) {
  throw Error(ErrorCode::kUnsupportedImageProperty,
              property(name) + " " + detail::quoted(value) + " is not supported by kiln: " + why);
}

// Models Nova accepts for a libvirt guest that QEMU 7.2 on x86 cannot give.
constexpr std::array<std::string_view, 6> kNovaOnlyInterfaceModels{"netfront", "spapr-vlan", "lan9118",
                                                                   "vmxnet",   "igb",        "sriov"};
constexpr std::array<std::string_view, 2> kNovaOnlyVideoModels{"xen", "gop"};

void require_model(const std::string& name, const std::string& value, std::span<const std::string_view> allowed,
                   std::span<const std::string_view> nova_only) {
  if (detail::is_one_of(value, nova_only)) unsupported(name, value, "QEMU has no such device for x86 guests");
  require_one_of(property(name), value, allowed);
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
         require_model(name, value, kInterfaceModels, kNovaOnlyInterfaceModels);
         spec.interface_model = value;
       }},
      {"hw_machine_type",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         if (!detail::is_supported_machine_type(value)) {
           refuse(property(name) + " " + detail::quoted(value) + " is not supported; allowed values are " +
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
         require_model(name, value, kVideoModels, kNovaOnlyVideoModels);
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
      {"os_secure_boot",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         // Nova's values. "optional" asks for nothing kiln must give.
         require_one_of(property(name), value, std::array<std::string_view, 3>{"required", "disabled", "optional"});
         spec.secure_boot = value == "required";
       }},
      {"hw_pointer_model",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, std::array<std::string_view, 1>{"usbtablet"});
         spec.usb_tablet = true;
       }},
      {"hw_input_bus",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kInputBuses);
         spec.input_bus = value;
       }},
      {"hw_watchdog_action",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         require_one_of(property(name), value, kWatchdogActions);
         spec.watchdog_action = value;
       }},
      {"hw_time_hpet",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         spec.hpet = boolean_property(name, value);
       }},
      {"hw_pmu",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         spec.pmu = boolean_property(name, value);
       }},
      {"img_hide_hypervisor_id",
       [](const std::string& name, const std::string& value, DomainSpec& spec) {
         spec.hide_hypervisor_id = boolean_property(name, value);
       }},
      {"hw_rng_model",
       [](const std::string& name, const std::string& value, DomainSpec&) {
         // Every kiln guest has a virtio RNG fed from the host's /dev/urandom.
         if (value != "virtio") unsupported(name, value, "kiln's guests have a virtio RNG");
       }},
      {"hw_scsi_model",
       [](const std::string& name, const std::string& value, DomainSpec&) {
         // kiln's SCSI controller is always virtio-scsi (current guests lack the others' drivers).
         if (value != "virtio-scsi") unsupported(name, value, "kiln's SCSI controller is virtio-scsi");
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
  return properties.contains(name) ? property(name) + " " + detail::quoted(value) : field + " " + detail::quoted(value);
}

// Nova's image properties (nova/objects/image_meta.py) that kiln does not
// implement, with the values that ask for nothing beyond what every kiln
// guest is. Any other value would make the guest differ from what the image's
// owner asked for, so the image is refused (unsupported_image_property)
// instead of booting silently otherwise. An empty list: every value refused.
const std::map<std::string_view, std::vector<std::string_view>>& unimplemented_properties() {
  static const std::vector<std::string_view> kFalse(kFalseWords.begin(), kFalseWords.end());
  static const std::map<std::string_view, std::vector<std::string_view>> table = {
      {"hw_architecture", {"x86_64"}},
      {"hw_emulation_architecture", {"x86_64"}},
      {"hw_vm_mode", {"hvm"}},
      {"img_hv_type", {"kvm", "qemu"}},
      {"img_config_drive", {"optional"}},
      {"hw_mem_page_size", {"small", "any"}},
      {"hw_cpu_policy", {"shared"}},
      {"hw_cpu_thread_policy", {}},
      {"hw_cpu_realtime_mask", {}},
      {"hw_cpu_sockets", {}},
      {"hw_cpu_cores", {}},
      {"hw_cpu_threads", {}},
      {"hw_cpu_max_sockets", {}},
      {"hw_cpu_max_cores", {}},
      {"hw_cpu_max_threads", {}},
      {"hw_numa_nodes", {"1"}},
      {"hw_pci_numa_affinity_policy", {}},
      {"hw_serial_port_count", {"1"}},
      {"hw_video_ram", {"0"}},
      {"hw_tpm_model", {}},
      {"hw_tpm_version", {}},
      {"hw_viommu_model", {}},
      {"hw_maxphysaddr_mode", {}},
      {"hw_maxphysaddr_bits", {}},
      {"hw_vif_multiqueue_enabled", kFalse},
      {"hw_virtio_packed_ring", kFalse},
      {"hw_mem_encryption", kFalse},
      {"hw_locked_memory", kFalse},
      {"hw_ipxe_boot", kFalse},
      {"hw_firmware_stateless", kFalse},
      {"hw_ephemeral_encryption", kFalse},
      {"hw_boot_menu_timeout", {}},
      {"hw_sound_model", {}},
      {"hw_usb_model", {}},
      {"hw_redirected_usb_ports", {"0"}},
  };
  return table;
}

void refuse_unimplemented(const std::string& name, const std::string& value) {
  // hw_numa_cpus.N and hw_numa_mem.N: a guest NUMA topology.
  if (name.starts_with("hw_numa_cpus.") || name.starts_with("hw_numa_mem.")) {
    unsupported(name, value, "kiln gives guests no NUMA topology");
  }
  auto found = unimplemented_properties().find(name);
  if (found == unimplemented_properties().end()) return;
  std::string word = value;
  std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
  if (detail::is_one_of(word, found->second)) return;
  unsupported(name, value,
              found->second.empty() ? "kiln does not implement it"
                                    : "kiln implements only " + detail::listing(found->second));
}

// os_secure_boot=required: Debian's Secure Boot OVMF with SMM, which QEMU
// gives only on q35. A machine type the image did not choose becomes q35 and
// the firmware UEFI; an image that chose otherwise is refused.
void resolve_secure_boot(const std::map<std::string, std::string>& properties, DomainSpec& spec) {
  if (!spec.secure_boot) return;
  std::string value = properties.at("os_secure_boot");
  if (properties.contains("hw_firmware_type") && spec.firmware != "uefi") {
    unsupported("os_secure_boot", value, "Secure Boot needs hw_firmware_type uefi, not " + detail::quoted(spec.firmware));
  }
  if (properties.contains("hw_machine_type") && !is_q35(spec.machine_type)) {
    unsupported("os_secure_boot", value, "Secure Boot needs a q35 machine, not " + detail::quoted(spec.machine_type));
  }
  if (!std::filesystem::exists(kOvmfSecureBootCode) || !std::filesystem::exists(kOvmfSecureBootVariablesTemplate)) {
    unsupported("os_secure_boot", value,
                std::string("this host lacks the Secure Boot firmware ") + kOvmfSecureBootCode + " (Debian's ovmf)");
  }
  spec.firmware = "uefi";
  if (!is_q35(spec.machine_type)) spec.machine_type = "q35";
  spec.firmware_code = kOvmfSecureBootCode;
  spec.firmware_variables_template = kOvmfSecureBootVariablesTemplate;
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
    refuse_unimplemented(name, value);
  }
  resolve_secure_boot(properties, updated);
  check_buses_fit_machine(properties, updated);
  spec = std::move(updated);
}

}  // namespace kiln::virt
