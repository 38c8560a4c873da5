// Where the host's instance storage went: `kilnctl du`.
//
// Bytes are allocated blocks (st_blocks * 512), what the filesystem really
// spends; bases are sparse, so their file sizes mean little. A base's bytes
// are "shared" when more than one instance is backed by it. "Freed by
// deleting" is the arithmetic operators otherwise do by hand: for an
// instance, its own directory plus every base only it uses (they become
// prunable); for a base, its bytes when nothing uses it, else nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kiln::instance {

struct InstanceUsage {
  std::string uuid;
  std::uint64_t own_bytes = 0;       // the directory's files
  std::uint64_t backing_bytes = 0;   // the bases it uses (also counted under bases)
  std::uint64_t freed_by_deleting = 0;
  std::vector<std::string> bases;    // base file names in _base
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
};

DiskUsage disk_usage(const std::filesystem::path& instances_path);

nlohmann::json to_json(const DiskUsage& usage);

}  // namespace kiln::instance
