// The libvirt domain XML of a kiln instance, built with pugixml.
//
// Mirrors what Nova's libvirt driver writes for an image-backed KVM guest:
// SMBIOS sysinfo naming the instance, ACPI/APIC, UTC clock with Nova's
// timers, virtio disks with the format pinned, a serial console logged to
// console.log, a virtio balloon and RNG. The output is deterministic for a
// given DomainSpec, so it can be written to libvirt.xml and compared.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::virt {

struct DiskDevice {
  std::string path;         // absolute
  std::string format;       // "qcow2", "raw"
  std::string target;       // "vda", "vdb"
  std::string bus = "virtio";
  std::string cache_mode;   // "none" or "writeback"
};

struct DomainSpec {
  std::string domain_type;  // "kvm" or "qemu"
  std::string name;
  std::string uuid;
  std::uint64_t memory_mb = 0;
  unsigned vcpus = 0;
  std::string machine_type = "pc";
  std::vector<DiskDevice> disks;  // boot disk first
  std::string console_log;        // absolute path of console.log
  // Recorded in <metadata> so an operator (and recovery) can tell where it came from.
  std::string image_id;
  std::string display_name;
};

std::string build_domain_xml(const DomainSpec& spec);

}  // namespace kiln::virt
