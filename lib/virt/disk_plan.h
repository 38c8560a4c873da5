// Private to lib/virt: where each disk of a spec goes in the guest.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kiln/virt/domain_spec.h"

namespace kiln::virt::detail {

struct PlannedDisk {
  std::string path;
  std::string format;
  std::string device;  // "disk" or "cdrom"
  std::string bus;
  std::string target;  // "vda", "sdb", "hdc"
  std::string cache_mode;
  bool read_only = false;
  std::optional<RbdSource> rbd;  // a network disk instead of the file `path`
};

// The spec's disks in guest order (root, ephemeral, swap, cdroms), each
// target the next free name of its bus's prefix, as Nova's blockinfo names
// them; or the transitional `disks` exactly as given.
// REQUIRES: disk_bus and the effective cdrom bus are known buses.
std::vector<PlannedDisk> plan_disks(const DomainSpec& spec);

}  // namespace kiln::virt::detail
