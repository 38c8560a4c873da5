// An instance's disks as RBD images in the instances pool, named as nova
// names them: <uuid>_disk (root), <uuid>_disk.local, <uuid>_disk.swap.
//
// A root disk is a copy-on-write clone of the protected snapshot a Glance
// location names, grown to the flavor's root size: nothing is copied, and
// a clone that cannot be grown is removed again, so a failed call leaves
// no image behind. Removal takes every image of the pool whose name starts
// with "<uuid>_", as nova's cleanup does, and nothing else.
// Thread-safety: as the Pool passed in (one thread at a time).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/rbd/cluster.h"
#include "kiln/rbd/location.h"

namespace kiln::rbd {

// "<uuid>_<disk>" for a layout disk name (layout::kRootDisk, kEphemeralDisk,
// kSwapDisk). Throws kInvalidUuid unless `uuid` is a UUID (lower-cased).
std::string instance_image_name(std::string_view uuid, std::string_view disk);

// Clones `location` (Cluster::check_cloneable first) into
// `pool`/<uuid>_disk and grows it to `root_bytes`; 0 keeps the image's own
// size. A root_bytes smaller than the image throws kFlavorDiskTooSmall
// before anything is cloned; an existing <uuid>_disk throws kConflict and is
// left alone. Returns the new image's name, size and parent.
ImageInfo clone_root_disk(const Cluster& cluster, const Location& location, Pool& pool, std::string_view uuid,
                          std::uint64_t root_bytes);

// The same for any of the instance's disks: `pool`/<uuid>_<disk> (swap and
// ephemeral disks are clones of kiln's pool bases, kiln/rbd/pool_base.h).
ImageInfo clone_instance_disk(const Cluster& cluster, const Location& location, Pool& pool, std::string_view uuid,
                              std::string_view disk, std::uint64_t root_bytes);

// Removes every image of `pool` named "<uuid>_*"; returns their names,
// sorted. Nothing to remove is no error. Throws kRbdError when Ceph refuses
// one (still open by a guest, or it has snapshots): those removed before it
// stay removed, and a second call finishes the job.
std::vector<std::string> remove_instance_images(Pool& pool, std::string_view uuid);

}  // namespace kiln::rbd
