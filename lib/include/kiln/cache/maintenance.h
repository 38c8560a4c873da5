// Looking after _base: what is there, who uses it, what rotted, what can go.
//
// "In use" means: the backing file named in the qcow2 header of some disk in
// some instance directory under instances_path, or a file its libvirt.xml
// attaches directly (an ISO cdrom, a kernel or initrd). The path may be shared by
// several hosts, so this host's libvirt domains are never the measure.
// Everything that deletes a base takes the base's lock without waiting (a
// base being fetched or given an overlay right now is skipped) and re-checks
// use and age under it, so a concurrent boot never loses its base.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/base_info.h"
#include "kiln/cache/cache_policy.h"

namespace kiln::cache {

enum class BaseKind { kImage, kSwap, kEphemeral };
std::string kind_name(BaseKind kind);

struct CacheEntry {
  std::string name;
  std::filesystem::path path;
  BaseKind kind = BaseKind::kImage;
  std::uint64_t physical_bytes = 0;  // blocks allocated (bases are sparse)
  std::uint64_t virtual_bytes = 0;   // file size
  std::optional<BaseInfo> info;      // image bases with a valid .info
  std::vector<std::filesystem::path> users;  // instance disks backed by this base
  Clock::time_point last_used;       // .info's last_used_at, else the file's mtime
};

// Instance disk -> the base it is backed by, for every qcow2 disk found.
std::map<std::filesystem::path, std::vector<std::filesystem::path>> scan_users(
    const std::filesystem::path& instances_path);

// Every base in _base (temporaries and .info files are not bases), by name.
std::vector<CacheEntry> list_cache(const std::filesystem::path& instances_path);

struct VerifyResult {
  std::string name;
  std::string state;  // "ok", "rotted" (sha256 differs), "no-info", "busy" (locked)
  std::string expected_sha256;
  std::string actual_sha256;
};
// Re-hashes every image base against its .info, under the base's lock.
std::vector<VerifyResult> verify_cache(const std::filesystem::path& instances_path);

struct RepairAction {
  std::filesystem::path path;
  std::string action;  // "removed stale temporary", "removed orphan .info", ...
};
// Removes temporaries whose base lock is free (a crash left them), .info
// files without a base, and unused image bases without a valid .info (they
// cannot be verified; a boot fetches them again). In-use ones are reported.
std::vector<RepairAction> repair_cache(const std::filesystem::path& instances_path);

struct PruneDecision {
  std::string name;
  std::filesystem::path path;
  std::uint64_t physical_bytes = 0;
  std::string reason;  // "unused for more than 86400 s", "over the cache budget", "to make room"
  bool removed = false;  // false on a dry run or when the base turned out busy/in use
};

// Nova's aging plus the size budget (least recently used unused bases first).
std::vector<PruneDecision> prune_cache(const std::filesystem::path& instances_path,
                                       const CachePolicy& policy, Clock::time_point now,
                                       bool dry_run);

// Evicts unused bases, least recently used first, until at least `bytes` are
// available on the filesystem or nothing unused is left. Returns what went.
std::vector<PruneDecision> make_room(const std::filesystem::path& instances_path,
                                     std::uint64_t bytes);

// The budget in bytes from max_cache_bytes / max_cache_percent (0 = none).
std::uint64_t cache_budget(const std::filesystem::path& instances_path, const CachePolicy& policy);

}  // namespace kiln::cache
