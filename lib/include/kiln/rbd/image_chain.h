// An RBD image's clone chain and the bytes each layer really holds: what
// `kilnctl instance show` says of a disk in Ceph.
//
// The chain starts at the image (its head) and follows each parent
// snapshot: an instance's <uuid>_disk, then the pool base or Glance image
// snapshot it was cloned from, then that image's own parent, if any. A
// layer's used_bytes are the bytes Ceph stores for that layer alone, counted
// as `rbd du` counts them (whole RADOS objects written in that layer, its
// parent's objects not included), so the layers add up to what the disk
// costs the cluster. Reading only: images are opened read-only, nothing is
// written or locked.
// Thread-safety: as the Pool passed in (one thread at a time).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/rbd/cluster.h"

namespace kiln::rbd {

struct ChainLayer {
  std::string pool;
  std::string image;
  std::string snapshot;             // "" for the head of the first layer
  std::uint64_t virtual_size = 0;   // at the snapshot, for a parent
  // Bytes this layer holds itself; unset when its pool could not be read
  // (client.kiln may lack the caps on Glance's pool): `unreadable` says why.
  std::optional<std::uint64_t> used_bytes;
  std::string unreadable;
  std::string spec() const { return pool + "/" + image + (snapshot.empty() ? "" : "@" + snapshot); }
};

// The bytes `image` holds itself at `snapshot` ("" = its head), as a
// layer's used_bytes above. Throws kNotFound for no such image or snapshot.
std::uint64_t stored_bytes(const Pool& pool, const std::string& image, const std::string& snapshot);

// Throws kNotFound when `image` is not in `pool`, kRbdError when Ceph fails
// on the first layer. A parent that cannot be opened ends the chain with a
// layer whose used_bytes is unset, rather than failing the whole report.
std::vector<ChainLayer> image_chain(const Cluster& cluster, const Pool& pool, const std::string& image);

}  // namespace kiln::rbd
