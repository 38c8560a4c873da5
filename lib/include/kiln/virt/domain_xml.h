// The libvirt domain XML of a kiln instance, built with pugixml.
//
// Mirrors what Nova's libvirt driver writes for an image-backed KVM guest:
// SMBIOS sysinfo naming the instance; <os> with the machine type, BIOS or
// UEFI (OVMF pflash + a per-instance nvram), the boot order (hd; cdrom then
// hd for ISO images) or a direct kernel boot, and the boot menu; ACPI, APIC,
// vmcoreinfo and, for Windows on KVM, Nova's Hyper-V enlightenments;
// host-model CPU on KVM only; a UTC clock (localtime for Windows) with Nova's
// KVM timers; disks with the format pinned and targets derived from their bus
// (root, ephemeral, swap, cdroms), a virtio-scsi controller when a disk is on
// scsi and no USB controller unless a disk is on usb; NICs on a bridge or a
// bare tap; a serial console logged to console.log; the QEMU guest agent
// channel on request; a video device; a virtio balloon and RNG.
//
// Windows on the qemu (TCG) domain type gets no Hyper-V enlightenments:
// QEMU without KVM refuses to start with them ("kernel doesn't allow setting
// HyperV VP_INDEX"), so Nova's set would make the guest unbootable there.
//
// The output is deterministic for a given DomainSpec, so it can be written
// to libvirt.xml and compared. Thread-safe.
#pragma once

#include <string>

#include "kiln/virt/domain_spec.h"

namespace kiln::virt {

// The namespace of the <kiln:instance> element in <metadata>: it marks a
// domain as kiln's (Connection::list_domains, reconcile).
inline constexpr const char* kMetadataNamespace = "https://kiln.dev/xmlns/libvirt/kiln/1.0";

// The domain XML for `spec`, indented, without an XML declaration.
// Throws kiln::Error kInvalidArgument when check_domain_spec() refuses it.
std::string build_domain_xml(const DomainSpec& spec);

}  // namespace kiln::virt
