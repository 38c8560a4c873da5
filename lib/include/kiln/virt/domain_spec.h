// DomainSpec: everything kiln decides about a guest before it becomes
// libvirt domain XML, and the rules a spec must satisfy.
//
// A spec is plain data, filled in by three hands: the instance layer (name,
// flavor, the disk files it created, the NICs of the request), the Glance
// image properties (apply_image_properties() in image_properties.h) and the
// host (domain type, cache mode). Enumerated fields hold libvirt's own words
// and accept only the values listed next to them below (the k... lists), so
// neither a request nor an image can put arbitrary text into the XML.
// check_domain_spec() enforces every rule; build_domain_xml() calls it.
// Nothing here touches the filesystem or libvirt. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::virt {

// The values each enumerated field accepts, in the order messages list them.
inline constexpr std::array<std::string_view, 2> kDomainTypes{"kvm", "qemu"};
inline constexpr std::array<std::string_view, 5> kDiskBuses{"virtio", "scsi", "sata", "ide", "usb"};
inline constexpr std::array<std::string_view, 4> kCdromBuses{"ide", "sata", "scsi", "usb"};
inline constexpr std::array<std::string_view, 2> kDiskFormats{"qcow2", "raw"};
// libvirt's disk cache modes nova's [libvirt] disk_cachemodes may name.
inline constexpr std::array<std::string_view, 5> kCacheModes{"none", "writeback", "writethrough", "directsync", "unsafe"};
inline constexpr std::array<std::string_view, 7> kInterfaceModels{"virtio",   "e1000", "e1000e",  "rtl8139",
                                                                  "ne2k_pci", "pcnet", "vmxnet3"};
inline constexpr std::array<std::string_view, 2> kInterfaceTypes{"bridge", "ethernet"};
inline constexpr std::array<std::string_view, 7> kVideoModels{"virtio", "vga", "cirrus", "qxl", "vmvga", "bochs", "none"};
inline constexpr std::array<std::string_view, 2> kFirmwareTypes{"bios", "uefi"};
inline constexpr std::array<std::string_view, 2> kOsTypes{"linux", "windows"};

// Debian's ovmf package: 4 MiB flash, no Secure Boot, usable on pc and q35.
inline constexpr const char* kOvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
inline constexpr const char* kOvmfVariablesTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd";
// The same with Secure Boot (SMM required, q35 only) and Microsoft's keys
// enrolled, which is what Windows and shim-signed Linux expect.
inline constexpr const char* kOvmfSecureBootCode = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
inline constexpr const char* kOvmfSecureBootVariablesTemplate = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
inline constexpr std::array<std::string_view, 2> kInputBuses{"usb", "virtio"};
inline constexpr std::array<std::string_view, 5> kWatchdogActions{"disabled", "pause", "poweroff", "reset", "none"};

// A monitor of a Ceph cluster, as QEMU's librbd reaches it.
struct CephMonitor {
  std::string host;  // an IP address or a DNS name: letters, digits, '.', '-', ':'
  int port = 0;      // 1..65535
};

// An RBD image as a network disk (<disk type='network'>, protocol rbd): QEMU
// opens it itself through librbd, as the Ceph user `username`, whose key is
// the libvirt secret (usage type ceph) with uuid `secret_uuid`.
struct RbdSource {
  std::string name;  // "<pool>/<image>": Ceph names, no '/', '@', ':', '\', space or control character
  std::vector<CephMonitor> monitors;  // at least one
  std::string username;               // the Ceph user without "client."
  std::string secret_uuid;            // canonical
};

// A disk image of the instance: a file, or with `rbd` an RBD image (then
// `path` is empty and `format` is "raw").
struct DiskFile {
  std::string path;    // absolute
  std::string format;  // one of kDiskFormats
  std::optional<RbdSource> rbd;
};

// A guest NIC backed by a tap device, which libvirt creates when the domain
// starts and deletes when it stops.
struct NetworkInterface {
  std::string type;    // "bridge": the tap joins `bridge`; "ethernet": a bare tap
  std::string bridge;  // an existing Linux bridge; only (and always) for "bridge"
  std::string mac;     // unicast, six colon-separated hex octets; written lowercase
  std::string tap;     // the tap's name; "" lets libvirt pick vnetN
  std::string model;   // one of kInterfaceModels; "" means the spec's interface_model
};

// A NIC as the boot request's "nics" items carry it (schemas/boot-request):
// empty fields are left out; from_json does not check the values
// (check_network_interface does).
void to_json(nlohmann::json& out, const NetworkInterface& nic);
void from_json(const nlohmann::json& in, NetworkInterface& nic);

struct DomainSpec {
  std::string domain_type;  // one of kDomainTypes
  std::string name;         // libvirt's domain name, e.g. "instance-<uuid>"
  std::string uuid;         // canonical, the instance's
  std::uint64_t memory_mb = 0;
  unsigned vcpus = 0;
  // "pc", "q35", or a versioned "pc-i440fx-<version>" / "pc-q35-<version>".
  std::string machine_type = "pc";
  std::string os_type = "linux";  // one of kOsTypes; "windows" changes clock and features

  // Disks. Their targets are derived from the bus, in this order: root,
  // ephemeral, swap, then each cdrom (vda.. for virtio; sda.. for scsi, sata
  // and usb; hda..hdd for ide).
  std::optional<DiskFile> root_disk;       // <instance>/disk; REQUIRED
  std::optional<DiskFile> ephemeral_disk;  // <instance>/disk.local
  std::optional<DiskFile> swap_disk;       // <instance>/disk.swap
  std::vector<std::string> cdrom_images;   // absolute paths of raw images, attached read-only
  std::string disk_bus = "virtio";         // one of kDiskBuses
  std::string cdrom_bus;                   // one of kCdromBuses; "" = ide on pc, sata on q35
  std::string cache_mode = "none";         // one of kCacheModes, for every disk
  bool boot_from_cdrom = false;            // boot order cdrom, then hd (ISO images)

  // Direct kernel boot (images with kernel_id / ramdisk_id). When
  // kernel_path is empty the guest boots from its disks and the other two
  // fields are ignored, as Nova ignores os_command_line without a kernel.
  std::string kernel_path;          // absolute
  std::string initrd_path;          // absolute, or ""
  // "" = Nova's: "root=/dev/<root target> console=tty0 console=ttyS0
  // console=hvc0", plus "no_timer_check" on qemu.
  std::string kernel_command_line;

  std::string firmware = "bios";                                     // one of kFirmwareTypes
  std::string firmware_code = kOvmfCode;                             // used for uefi
  std::string firmware_variables_template = kOvmfVariablesTemplate;  // used for uefi
  // Secure Boot: loader secure='yes' and SMM. REQUIRES uefi, q35 and the
  // Secure Boot firmware above.
  bool secure_boot = false;
  // The instance's own UEFI variable store. REQUIRED for uefi: libvirt copies
  // the template there on first start and deletes it on undefine.
  std::string nvram_path;

  std::vector<NetworkInterface> interfaces;
  std::string interface_model = "virtio";  // one of kInterfaceModels
  std::string video_model = "virtio";      // one of kVideoModels; "none": no display device
  bool guest_agent = false;                // a virtio channel org.qemu.guest_agent.0 on a unix socket
  bool boot_menu = false;
  bool usb_tablet = false;         // an absolute pointer (Nova's hw_pointer_model=usbtablet)
  std::string input_bus = "usb";   // one of kInputBuses: the tablet's bus
  std::string watchdog_action;     // "" or "disabled": no watchdog; else an i6300esb with this action
  std::optional<bool> hpet;        // unset: no HPET on kvm (Nova), QEMU's default on qemu
  std::optional<bool> pmu;         // unset: the hypervisor's default
  bool hide_hypervisor_id = false; // kvm: hide the KVM signature from the guest's CPUID

  std::string console_log;  // absolute path of console.log
  // Recorded in <metadata> so an operator (and recovery) can tell where it came from.
  std::string image_id;
  std::string display_name;

};

// True for "q35" and versioned q35 machine types, which have no IDE bus.
bool is_q35(const std::string& machine_type);

// The bus cdroms use: spec.cdrom_bus, or Nova's default for the machine type
// when it is empty (ide on pc, sata on q35).
std::string effective_cdrom_bus(const DomainSpec& spec);

// Throws kiln::Error kInvalidArgument, naming the field, the value and what
// is allowed, unless `spec` can be turned into domain XML: enumerated fields
// hold listed values, paths are absolute, a root disk is present, no IDE
// device on q35 and at most four on pc, UEFI has an nvram path, every NIC is
// valid (check_network_interface) and MACs and tap names are unique.
void check_domain_spec(const DomainSpec& spec);

// Throws kiln::Error kInvalidArgument unless `nic` is usable: type from
// kInterfaceTypes, a bridge name exactly when the type is "bridge", a
// unicast MAC (the multicast bit of the first octet clear, not all zeros),
// and bridge and tap names that are Linux interface names (1 to 15 of
// [A-Za-z0-9_.-], not "." or ".."). Tap names libvirt reserves for names it
// generates (vnet*, macvtap*, macvlan*) are refused: libvirt would drop them.
void check_network_interface(const NetworkInterface& nic);

// kiln's default libvirt domain name: unique per instance, as nova's.
inline constexpr const char* kDefaultInstanceNameTemplate = "instance-%(uuid)s";

// The libvirt domain name for instance `uuid` under `name_template`, nova's
// [DEFAULT] instance_name_template in the form kiln supports: the uuid must
// appear exactly once, as "%(uuid)s" or "%s" (both the uuid: kiln has no
// numeric ids), and "%%" is a literal '%'. Any other conversion, a template
// without the uuid (every domain would get the same name) or a result that is
// not a usable domain name (empty, over 255 bytes, '/' or a control
// character) throws kiln::Error kInvalidArgument naming the template.
std::string domain_name_from_template(const std::string& name_template, const std::string& uuid);

}  // namespace kiln::virt
