// Glance image properties that shape a guest, applied to a DomainSpec.
//
// An image's owner chooses these, so each value is checked against an
// allow-list before it reaches the spec. A value outside it is refused with
// kiln::Error kInvalidArgument naming the property and the allowed values,
// and the spec is then left exactly as it was. Nova's other image properties
// (nova/objects/image_meta.py: CPU topology and pinning, NUMA, huge pages,
// TPM, config drive, ...) are refused with kUnsupportedImageProperty unless
// their value asks for nothing beyond what every kiln guest is (hw_cpu_policy
// shared, img_config_drive optional, hw_architecture x86_64, ...): an image
// never boots silently other than its owner asked. Properties that do not
// concern the hypervisor (os_distro, owner_specified.*, img_signature, ...)
// are ignored, as Nova ignores them.
//
//   property             values                                 effect on the spec
//   hw_disk_bus          virtio scsi sata ide usb               disk_bus (scsi: virtio-scsi controller)
//   hw_cdrom_bus         ide sata scsi usb                      cdrom_bus (default ide on pc, sata on q35)
//   hw_vif_model         virtio e1000 e1000e rtl8139            interface_model (NICs without a model)
//                        ne2k_pci pcnet vmxnet3                 (Nova's xen/ppc/arm models: unsupported)
//   hw_machine_type      pc q35 pc-i440fx-<v> pc-q35-<v>        machine_type; q35 has no IDE bus, so
//                                                               ide for disks or cdroms is refused
//   hw_firmware_type     bios uefi                              firmware (uefi: OVMF, spec.nvram_path)
//   hw_video_model       virtio vga cirrus qxl vmvga bochs none video_model (xen, gop: unsupported)
//   os_secure_boot       required disabled optional             required: Secure Boot OVMF (.ms.fd) with
//                                                               SMM, uefi and q35 (set unless the image
//                                                               chose otherwise, then refused)
//   hw_pointer_model     usbtablet                              usb_tablet
//   hw_input_bus         usb virtio                             input_bus (the tablet's)
//   hw_watchdog_action   disabled pause poweroff reset none     an i6300esb watchdog with that action
//   hw_time_hpet         Nova's booleans                        hpet
//   hw_pmu               Nova's booleans                        pmu
//   img_hide_hypervisor_id Nova's booleans                      hide_hypervisor_id (kvm only)
//   hw_rng_model         virtio                                 (every guest has a virtio RNG)
//   hw_scsi_model        virtio-scsi                            (kiln's SCSI controller)
//   hw_qemu_guest_agent  yes no (and Nova's other booleans)     guest_agent
//   hw_boot_menu         yes no (and Nova's other booleans)     boot_menu
//   os_type              linux windows                          os_type (windows: localtime clock,
//                                                               Hyper-V enlightenments on KVM)
//   os_command_line      printable ASCII, at most 2048 bytes    kernel_command_line (used only with
//                                                               a kernel, as Nova does)
//
// Nova's booleans (oslo strutils): yes/no, true/false, on/off, y/n, t/f, 1/0,
// any case. kernel_id and ramdisk_id name other images: the caller downloads
// them and sets spec.kernel_path and spec.initrd_path; an ISO image
// (disk_format iso, a field of the record, not a property) is the caller's
// to attach as spec.cdrom_images with boot_from_cdrom. Thread-safe.
#pragma once

#include <map>
#include <string>

#include "kiln/virt/domain_spec.h"

namespace kiln::virt {

// Applies the properties above to `spec`. Checks each value, and the
// combination with the spec's machine type (no ide on q35), before changing
// anything. Throws kiln::Error kInvalidArgument on the first bad value.
void apply_image_properties(const std::map<std::string, std::string>& properties, DomainSpec& spec);

}  // namespace kiln::virt
