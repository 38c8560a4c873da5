#include "disk_plan.h"

#include <map>

namespace kiln::virt::detail {

namespace {

// The guest's names, as Nova's blockinfo gives them: virtio disks are vdX,
// IDE disks hdX, and SCSI, SATA and USB disks share the sdX names.
std::string prefix_for_bus(const std::string& bus) {
  if (bus == "virtio") return "vd";
  if (bus == "ide") return "hd";
  return "sd";
}

// "a".."z", then "aa", "ab", ... as Linux names the 27th disk and on.
std::string letters_for(std::size_t index) {
  std::string letters;
  for (std::size_t n = index + 1; n > 0; n = (n - 1) / 26) {
    letters.insert(letters.begin(), static_cast<char>('a' + (n - 1) % 26));
  }
  return letters;
}

class TargetNames {
 public:
  std::string next(const std::string& bus) {
    std::string prefix = prefix_for_bus(bus);
    return prefix + letters_for(used_[prefix]++);
  }

 private:
  std::map<std::string, std::size_t> used_;
};

}  // namespace

std::vector<PlannedDisk> plan_disks(const DomainSpec& spec) {
  std::vector<PlannedDisk> planned;
  TargetNames names;
  for (const auto* file : {&spec.root_disk, &spec.ephemeral_disk, &spec.swap_disk}) {
    if (!file->has_value()) continue;
    // An RBD disk is cached writeback, as nova's disk_cachemodes network=writeback advises for Ceph:
    // librbd's own cache then serves the guest, and flushes still reach the cluster.
    planned.push_back({(*file)->path, (*file)->format, "disk", spec.disk_bus, names.next(spec.disk_bus),
                       (*file)->rbd ? "writeback" : spec.cache_mode, false, (*file)->rbd});
  }
  std::string cdrom_bus = effective_cdrom_bus(spec);
  for (const std::string& image : spec.cdrom_images) {
    planned.push_back({image, "raw", "cdrom", cdrom_bus, names.next(cdrom_bus), spec.cache_mode, true, std::nullopt});
  }
  return planned;
}

}  // namespace kiln::virt::detail
