#include "kiln/rbd/instance_disks.h"

#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/layout.h"
#include "kiln/util/uuid.h"

namespace kiln::rbd {

std::string instance_image_name(std::string_view uuid, std::string_view disk) {
  return normalize_uuid(uuid) + "_" + std::string(disk);
}

ImageInfo clone_root_disk(const Cluster& cluster, const Location& location, Pool& pool, std::string_view uuid,
                          std::uint64_t root_bytes) {
  return clone_instance_disk(cluster, location, pool, uuid, layout::kRootDisk, root_bytes);
}

ImageInfo clone_instance_disk(const Cluster& cluster, const Location& location, Pool& pool, std::string_view uuid,
                              std::string_view disk, std::uint64_t root_bytes) {
  std::string child = instance_image_name(uuid, disk);
  // The size check before the clone (which checks the rest): a refused
  // flavor leaves nothing to undo. A missing or unprotected snapshot is
  // refused here already, by the clone's own checks.
  cluster.check_same_cluster(location);
  {
    Pool parent = cluster.open_pool(location.pool);
    SnapshotState state = parent.snapshot(location.image, location.snapshot);
    if (!state.exists || !state.is_protected) cluster.check_cloneable(location);  // throws the precise error
    std::uint64_t image_bytes = state.size_bytes;
    if (root_bytes != 0 && root_bytes < image_bytes) {
      throw Error(ErrorCode::kFlavorDiskTooSmall, "the flavor's root disk (" + std::to_string(root_bytes) +
                                                      " bytes) is smaller than RBD image " + location.spec() + " (" +
                                                      std::to_string(image_bytes) + " bytes)");
    }
  }
  cluster.clone(location, pool, child);
  KILN_FAILPOINT("rbd.clone.created");  // not grown yet
  try {
    if (root_bytes != 0) pool.grow(child, root_bytes);
    return pool.stat(child);
  } catch (...) {
    try {
      pool.remove(child);
    } catch (const Error&) {
      // The original failure is the one to report; the clone is left for remove_instance_images.
    }
    throw;
  }
}

std::vector<std::string> remove_instance_images(Pool& pool, std::string_view uuid) {
  std::string prefix = normalize_uuid(uuid) + "_";
  std::vector<std::string> removed;
  for (const ImageInfo& image : pool.list()) {
    if (image.name.compare(0, prefix.size(), prefix) != 0) continue;
    try {
      pool.remove(image.name);
    } catch (const Error& error) {
      if (error.code() != ErrorCode::kNotFound) throw;  // gone meanwhile: what was asked
      continue;
    }
    removed.push_back(image.name);
  }
  return removed;
}

}  // namespace kiln::rbd
