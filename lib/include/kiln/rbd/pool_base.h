// kiln's base images in the instances pool: what an RBD host clones when
// Glance does not keep the image in this cluster as a raw snapshot (another
// store, qcow2, vmdk, ...), and what swap and ephemeral disks are cloned
// from. The first host that needs one downloads, verifies and converts the
// image through its own image cache (kiln/cache), and writes that verified
// raw file into the pool as "kiln-base-<base name>" with a protected
// snapshot "snap"; from then on every instance on every host is a clone of
// that snapshot and nothing is downloaded again.
//
// Promises:
// - A base under its final name is whole: the bytes go to "<name>.part",
//   which gets its metadata, its snapshot and the snapshot's protection, and
//   is renamed only then. A ".part" is an import cut short (a crash, a lost
//   lock); the next importer removes it.
// - One import per base across the cluster: only the holder of the RADOS
//   exclusive lock "kiln-import" on the object "<name>.lock" imports; every
//   other host waits for it and then clones what it published. The holder
//   renews the lock while it works, so a host that dies holding it frees it
//   kImportLockLifetime later, and an import whose lock was lost is not published.
// - The base is as sparse as the file: zero blocks are not written.
// - A base with clones cannot be removed: Ceph refuses to unprotect a
//   snapshot that has children, and remove_pool_base() relies on that; so
//   does prune_pool_bases(), which removes only bases without clones
//   imported longer ago than the cache's age rule, and reports a base that
//   gained a clone after it was listed as kept.
// Thread-safety: every function opens its own I/O contexts; a Cluster may
// be shared (kiln/rbd/cluster.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/rbd/cluster.h"
#include "kiln/rbd/location.h"

namespace kiln::rbd {

inline constexpr std::string_view kPoolBasePrefix = "kiln-base-";
inline constexpr std::string_view kPoolBaseSnapshot = "snap";
inline constexpr std::chrono::seconds kImportLockLifetime{30};
// Metadata keys on a pool base: which Glance image it holds (absent for
// swap and ephemeral bases), when it was imported, and when a host last
// used it (seconds since the epoch). The import sets kImportedAtKey; a boot
// that finds the base published, and every host's cache manager for each
// base with clones, set kLastUsedKey, as nova touches the base files its
// instances use. Prune ages a base by the later of the two; a base with
// neither counts as old.
inline constexpr const char* kImageIdKey = "kiln.image_id";
inline constexpr const char* kImportedAtKey = "kiln.imported_at";
inline constexpr const char* kLastUsedKey = "kiln.last_used";

// "kiln-base-" + the local base's name (cache::base_name_for, disk::swap_base_name,
// disk::ephemeral_base_name): one naming for both stores.
std::string pool_base_name(std::string_view local_base_name);

// A local raw file to import, and what keeps it from being pruned or
// replaced until the import has read it (the cache's lock on it).
struct LocalFile {
  std::filesystem::path path;
  std::shared_ptr<void> hold;
  std::map<std::string, std::string> metadata;  // set on the pool base (kImageIdKey)
};

struct PoolBase {
  Location location;  // the protected snapshot to clone
  std::uint64_t size_bytes = 0;
  bool imported = false;            // this call wrote it; false: it was there, or another host wrote it
  std::uint64_t written_bytes = 0;  // data written by this call (zero blocks skipped)
  std::chrono::milliseconds waited{0};  // waiting for another host's import
  // An import's two steps: creating the .part and writing its data and
  // metadata; then its snapshot, protection and rename (Ceph round trips).
  std::chrono::milliseconds write_time{0};
  std::chrono::milliseconds publish_time{0};
};

// The published base `name` in `pool` (the name from pool_base_name), made
// if it is not there: `local_file` is called at most once, with the import
// lock held, and its file written into the pool with its metadata; one
// found published is marked used now (kLastUsedKey). Waits
// at most `wait_limit` for another host's import. Throws kRbdError (Ceph
// failing, the wait running out, the lock lost during the import), and
// whatever `local_file` throws (a failed download leaves nothing in the
// pool but the lock object, free again).
PoolBase ensure_pool_base(const Cluster& cluster, const std::string& pool, const std::string& name,
                          const std::function<LocalFile()>& local_file,
                          std::chrono::seconds wait_limit = std::chrono::hours(1));

// A published base as the cache commands show it.
struct PoolBaseInfo {
  std::string name;
  std::string pool;
  std::uint64_t size_bytes = 0;  // virtual size
  // What the local base name after the prefix says: "image" (a sha1),
  // "swap", "ephemeral", or "other" (a name kiln does not make).
  std::string kind;
  std::string image_id;  // kImageIdKey; "" for swap and ephemeral bases
  // kImportedAtKey; nullopt when absent or unreadable (a base imported before
  // kiln recorded it, or made by hand).
  std::optional<std::chrono::system_clock::time_point> imported_at;
  std::optional<std::chrono::system_clock::time_point> last_used;  // kLastUsedKey, as imported_at
  std::vector<std::string> clones;  // "<pool>/<image>" of the snapshot's children, sorted
  bool in_use() const { return !clones.empty(); }
  // What prune ages the base by: the later of imported_at and last_used.
  std::optional<std::chrono::system_clock::time_point> last_activity() const;
};

// Every "kiln-base-*" image of `pool` with a snapshot "snap" (a ".part" is
// not a base), sorted by name.
std::vector<PoolBaseInfo> list_pool_bases(const Pool& pool);

// Marks each base of `listed` that has clones as used at `now` (kLastUsedKey):
// a host's cache manager does it each run, so that a base in use for years
// is young on the day its last clone goes. Returns how many were marked.
// Throws kRbdError.
std::size_t mark_pool_bases_in_use(Pool& pool, const std::vector<PoolBaseInfo>& listed,
                                   std::chrono::system_clock::time_point now);

// Removes base `name` (its snapshot first). Throws kConflict when the
// snapshot has clones, leaving the base as it was; kNotFound when there is
// no such image.
void remove_pool_base(Pool& pool, const std::string& name);

struct PoolBasePrune {
  std::string name;
  std::string pool;
  std::uint64_t size_bytes = 0;
  std::string reason;    // why it may go: "no clones, unused for more than 86400 s", ...
  bool removed = false;  // false on a dry run, or when it was kept
  std::string kept;      // a real run that kept it: why ("it has clones now", Ceph's error)
};

// The cache's aging for pool bases: of `listed` (list_pool_bases(pool), which
// may be stale), those without clones whose last activity (last_activity())
// is older than `minimum_age` at `now` (none recorded: old) are removed, unless
// `dry_run`. A base that has clones by the time it is removed (a boot cloned
// it since the listing), or that Ceph will not let go, is kept and said so;
// one already gone (another host's prune) is left out. Never throws: what
// happened to each base is in its decision.
std::vector<PoolBasePrune> prune_pool_bases(Pool& pool, const std::vector<PoolBaseInfo>& listed,
                                            std::chrono::seconds minimum_age,
                                            std::chrono::system_clock::time_point now, bool dry_run);

// One shape wherever they are shown: kilnctl cache ls|prune --json, GET
// /v1/cache and POST /v1/cache/prune ("pool_bases", "pool_decisions").
void to_json(nlohmann::json& out, const PoolBaseInfo& base);
void to_json(nlohmann::json& out, const PoolBasePrune& decision);

}  // namespace kiln::rbd
