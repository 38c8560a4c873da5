// Where the host's instance storage went: `kilnctl du`.
//
// Bytes are allocated blocks (st_blocks * 512), what the filesystem really
// spends; bases are sparse, so their file sizes mean little. A base's bytes
// are "shared" when more than one instance is backed by it. "Freed by
// deleting" is the arithmetic operators otherwise do by hand: for an
// instance, its own directory plus every base only it uses (they become
// prunable); for a base, its bytes when nothing uses it, else nothing.
//
// With images_type = rbd the instances' disks and the pool bases are in
// Ceph: their bytes are what Ceph stores for each image alone, as `rbd du`
// counts them (before replication), kept apart from the host's filesystem
// bytes. A pool base's users are its clones in the whole cluster, on every
// host; deleting an instance frees the pool bases only its disks use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kiln::instance {

struct InstanceUsage {
  std::string uuid;
  std::uint64_t own_bytes = 0;       // the directory's files
  std::uint64_t backing_bytes = 0;   // the bases it uses (also counted under bases)
  std::uint64_t freed_by_deleting = 0;
  std::vector<std::string> bases;    // base file names in _base
  std::uint64_t rbd_bytes = 0;       // its <uuid>_* images in the pool, each layer alone
  std::vector<std::string> pool_bases;  // the pool bases its disks are clones of
};

struct PoolBaseUsage {
  std::string name;                  // kiln-base-...
  std::string kind;                  // "image", "swap", "ephemeral", "other"
  std::uint64_t bytes = 0;           // stored at its snapshot
  std::size_t clones = 0;            // in the whole cluster
  std::uint64_t freed_by_deleting = 0;  // bytes when it has no clone, else 0
};

struct BaseUsage {
  std::string name;
  std::string kind;                  // "image", "swap", "ephemeral"
  std::uint64_t bytes = 0;
  std::size_t users = 0;             // instance directories backed by it
  std::uint64_t shared_bytes = 0;    // bytes when users > 1, else 0
  std::uint64_t freed_by_deleting = 0;  // bytes when users == 0, else 0
};

struct DiskUsage {
  std::vector<InstanceUsage> instances;
  std::vector<BaseUsage> bases;
  std::uint64_t instances_bytes = 0;  // sum of own_bytes
  std::uint64_t bases_bytes = 0;
  std::uint64_t other_bytes = 0;      // temporaries, locks, .info files
  std::uint64_t total_bytes = 0;      // everything under instances_path
  std::uint64_t filesystem_available = 0;
  // images_type = rbd: the pool, its bases and the bytes in it.
  std::optional<std::string> pool;
  std::vector<PoolBaseUsage> pool_bases;
  std::uint64_t pool_instances_bytes = 0;  // sum of rbd_bytes
  std::uint64_t pool_bases_bytes = 0;
  std::optional<std::string> rbd_unreachable;  // Ceph could not be read: no pool figures
};

struct RbdHost;

// Throws kRbdError when `rbd` is set and Ceph fails.
DiskUsage disk_usage(const std::filesystem::path& instances_path, const RbdHost* rbd = nullptr);

nlohmann::json to_json(const DiskUsage& usage);

}  // namespace kiln::instance
