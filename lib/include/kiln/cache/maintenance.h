// Looking after _base: what is there, who uses it, what rotted, what can go.
//
// "In use" means: the backing file named in the qcow2 header of some disk in
// some instance directory under instances_path, a file its libvirt.xml
// attaches directly (an ISO cdrom, a kernel or initrd), or a disk its
// disk.info lists, resolves to the base: same device and inode, however the
// path is spelled (relative, through symlinks or a bind mount). A reference
// that resolves to nothing here (shared storage mounted elsewhere on the host
// that wrote it) counts by its file name inside a `_base` directory, nova's
// rule. The path may be shared by several hosts, so this host's libvirt
// domains are never the measure.
//
// What kiln did not make it does not delete unasked: an image base without a
// kiln .info is foreign (nova made it, or an operator put it there). Repair
// never touches it; prune ages it by its mtime as nova does, and only with
// remove_unused_base_images; the budget and making room never take it.
// Everything that deletes a base takes the base's lock without waiting (a
// base being fetched or given an overlay right now is skipped) and re-checks
// use and age under it, so a concurrent boot never loses its base.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json_fwd.hpp>
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

// Who refers to what, from every instance directory under instances_path.
struct UserIndex {
  // (st_dev, st_ino) of the referenced file -> the files referring to it.
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<std::filesystem::path>> by_identity;
  // Unresolvable references into a `_base` directory: file name -> referrers.
  std::map<std::string, std::vector<std::filesystem::path>> by_base_name;

  // The referrers of `base` (a file in _base), each once.
  std::vector<std::filesystem::path> users_of(const std::filesystem::path& base) const;
};
UserIndex scan_users(const std::filesystem::path& instances_path);

// Sets a base's mtime to now, as nova does when it builds on a base; errors
// are ignored (a read-only NFS export still boots).
void touch_base(const std::filesystem::path& base);

// Every base in _base (temporaries and .info files are not bases), by name.
std::vector<CacheEntry> list_cache(const std::filesystem::path& instances_path);

struct VerifyResult {
  std::string name;
  std::string state;      // "ok", "rotted" (the digest differs), "no-info", "busy" (locked)
  std::string algorithm;  // "xxh3-128 data-extents" (base_digest), or "sha256" (an older .info)
  std::string expected;
  std::string actual;
};
// Re-hashes every image base against its .info (the way its .info says:
// base_digest, or base_sha256 for an .info written before it); a base being
// fetched or deleted right now (its lock is held) is "busy".
std::vector<VerifyResult> verify_cache(const std::filesystem::path& instances_path);

struct RepairAction {
  std::filesystem::path path;
  std::string action;  // "removed stale temporary", "removed orphan .info", ...
};
// Removes kiln's own leftovers whose lock is free: temporaries a crash left,
// .info files without a base, lock files without a base, and failed-download
// records older than policy.failed_download_ttl. Never a base.
std::vector<RepairAction> repair_cache(const std::filesystem::path& instances_path,
                                       const CachePolicy& policy = {});

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

struct RoomResult {
  bool fits = false;                 // available + evictable_bytes reaches the request
  std::uint64_t evictable_bytes = 0;  // what every evictable base together holds
  std::vector<PruneDecision> evicted;
};
// Makes `bytes` available on the filesystem by evicting kiln's unused bases
// whose last use is older than policy.eviction_minimum_age, least recently
// used first, and no more than needed. When even all of them would not do,
// evicts nothing.
RoomResult make_room(const std::filesystem::path& instances_path, std::uint64_t bytes, const CachePolicy& policy,
                     Clock::time_point now);

// The budget in bytes from max_cache_bytes / max_cache_percent (0 = none).
std::uint64_t cache_budget(const std::filesystem::path& instances_path, const CachePolicy& policy);

// The records above as JSON, one shape each wherever they are shown:
// kilnctl cache ls|verify|repair|prune --json, GET /v1/cache and POST
// /v1/cache/prune. A CacheEntry's "state" is "no-info" for an image base
// without a valid .info, else "ok".
void to_json(nlohmann::json& out, const CacheEntry& entry);
void to_json(nlohmann::json& out, const VerifyResult& result);
void to_json(nlohmann::json& out, const RepairAction& action);
void to_json(nlohmann::json& out, const PruneDecision& decision);

}  // namespace kiln::cache
