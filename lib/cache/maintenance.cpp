#include "kiln/cache/maintenance.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "kiln/image/inspector.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/lock.h"
#include "kiln/util/temporaries.h"

namespace kiln::cache {

namespace fs = std::filesystem;

namespace {

bool has_suffix(const std::string& name, const std::string& suffix) {
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_temporary(const std::string& name) {
  return has_suffix(name, ".part") || has_suffix(name, ".converted") || has_suffix(name, ".tmp");
}

// The private directory of a conversion kiln was killed in (SandboxOutput:
// ".<base>.converted.sandbox-XXXXXX"): the base it belongs to, or nullopt.
std::optional<std::string> sandbox_leftover_owner(const std::string& name) {
  constexpr std::string_view kMarker = ".converted.sandbox-";
  auto at = name.find(kMarker);
  if (name.size() < 2 || name[0] != '.' || at == std::string::npos || at < 2) return std::nullopt;
  return name.substr(1, at - 1);
}

std::optional<BaseKind> kind_of(const std::string& name) {
  if (name.rfind("swap_", 0) == 0) return BaseKind::kSwap;
  if (name.rfind("ephemeral_", 0) == 0) return BaseKind::kEphemeral;
  if (name.size() == 40 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return BaseKind::kImage;
  }
  return std::nullopt;
}

// The base a temporary or .info belongs to: "<name>.part" -> "<name>".
std::string owner_name(const std::string& name) { return name.substr(0, name.rfind('.')); }

fs::path lock_path(const fs::path& instances_path, const std::string& base_name) {
  return instances_path / "locks" / ("kiln-" + base_name);
}

Clock::time_point modified_at(const struct stat& info) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(info.st_mtim.tv_sec) + std::chrono::nanoseconds(info.st_mtim.tv_nsec)));
}

std::optional<CacheEntry> describe_entry(const fs::path& path, BaseKind kind) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return std::nullopt;
  CacheEntry entry;
  entry.name = path.filename().string();
  entry.path = path;
  entry.kind = kind;
  entry.physical_bytes = static_cast<std::uint64_t>(info.st_blocks) * 512;
  entry.virtual_bytes = static_cast<std::uint64_t>(info.st_size);
  if (kind == BaseKind::kImage) entry.info = load_base_info(path);
  entry.last_used = entry.info ? entry.info->last_used_at : modified_at(info);
  return entry;
}

// Whether `entry` is kiln's own: an image base with a kiln .info. Swap and
// ephemeral bases follow nova's names, so nova's may sit among kiln's; they
// are aged (as nova ages them) but never evicted for room or budget.
bool made_by_kiln(const CacheEntry& entry) { return entry.kind == BaseKind::kImage && entry.info.has_value(); }

// Removes one unused base under its lock, re-checking use and `still_wanted`
// there, and then its lock file, still under the lock: waiters that opened
// the old lock file notice it is gone once they get it (kiln/util/lock.h).
bool remove_if_unused(const fs::path& instances_path, const CacheEntry& entry,
                      const std::function<bool(const CacheEntry&)>& still_wanted) {
  auto lock = FileLock::try_lock(lock_path(instances_path, entry.name));
  if (!lock) return false;  // being fetched or given an overlay right now
  auto fresh = describe_entry(entry.path, entry.kind);
  if (!fresh || !scan_users(instances_path).users_of(entry.path).empty() || !still_wanted(*fresh)) return false;
  std::error_code error;
  KILN_FAILPOINT("prune.locked");
  fs::remove(entry.path, error);  // the base first: a base never exists without its .info
  if (error) return false;
  KILN_FAILPOINT("prune.base_removed");
  fs::remove(info_path_for(entry.path), error);
  KILN_FAILPOINT("prune.info_removed");
  lock->unlink_locked();
  return true;
}

std::uint64_t filesystem_bytes(const fs::path& directory, bool available) {
  struct statvfs info {};
  if (::statvfs(directory.c_str(), &info) != 0) throw_io_error("cannot statvfs " + directory.string(), errno);
  return static_cast<std::uint64_t>(available ? info.f_bavail : info.f_blocks) * info.f_frsize;
}

std::vector<CacheEntry> unused_oldest_first(const fs::path& instances_path) {
  std::vector<CacheEntry> unused;
  for (auto& entry : list_cache(instances_path)) {
    if (entry.users.empty()) unused.push_back(std::move(entry));
  }
  std::sort(unused.begin(), unused.end(),
            [](const CacheEntry& a, const CacheEntry& b) { return a.last_used < b.last_used; });
  return unused;
}

// Only a qcow2 file can name a backing file the scan counts; reading 4 bytes
// first spares the full inspection of console logs and XML (1,000 instance
// directories: 240 ms before, 105 ms after; tools/bench/scan.sh).
bool starts_like_qcow2(const fs::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  UniqueFd owned(fd);
  char magic[4] = {};
  return ::pread(fd, magic, sizeof magic, 0) == sizeof magic && std::memcmp(magic, "QFI\xfb", 4) == 0;
}

}  // namespace

std::string kind_name(BaseKind kind) {
  switch (kind) {
    case BaseKind::kImage: return "image";
    case BaseKind::kSwap: return "swap";
    case BaseKind::kEphemeral: return "ephemeral";
  }
  return "unknown";
}

namespace {

// Resolves one reference (as written: absolute, or relative to the file that
// holds it) into the index: by identity when it names a file here, else by
// its name when it points into a `_base` directory.
void add_reference(UserIndex& index, const fs::path& written, const fs::path& referrer) {
  if (written.empty()) return;
  fs::path target = written.is_absolute() ? written : referrer.parent_path() / written;
  struct stat info {};
  if (::stat(target.c_str(), &info) == 0) {
    index.by_identity[{static_cast<std::uint64_t>(info.st_dev), static_cast<std::uint64_t>(info.st_ino)}]
        .push_back(referrer);
  } else if (target.lexically_normal().parent_path().filename() == "_base") {
    index.by_base_name[target.lexically_normal().filename().string()].push_back(referrer);
  }
}

// Files an instance's domain opens directly from _base: ISO cdroms and
// kernel/initrd images, named in its libvirt.xml.
void add_direct_users(const fs::path& directory, UserIndex& index) {
  fs::path definition = directory / "libvirt.xml";
  pugi::xml_document document;
  if (!document.load_file(definition.c_str())) return;
  for (const char* xpath : {"/domain/devices/disk/source/@file", "/domain/os/kernel", "/domain/os/initrd"}) {
    for (const auto& found : document.select_nodes(xpath)) {
      add_reference(index, found.attribute() ? found.attribute().value() : found.node().text().get(), definition);
    }
  }
}

// disk.info lists disks by path; one that is a base (a copied or linked
// disk, nova's Flat backend) keeps it in use.
void add_disk_info_users(const fs::path& directory, UserIndex& index) {
  fs::path disk_info = directory / "disk.info";
  std::string text;
  try {
    text = read_file(disk_info);
  } catch (const Error&) {
    return;
  }
  auto record = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object()) return;
  for (const auto& [path, format] : record.items()) add_reference(index, path, disk_info);
}

void add_backing_users(const fs::path& directory, UserIndex& index) {
  std::error_code error;
  for (const auto& file : fs::directory_iterator(directory, error)) {
    if (!file.is_regular_file(error) || !starts_like_qcow2(file.path())) continue;
    try {
      image::Inspection inspection = image::inspect_file(file.path());
      if (inspection.format == "qcow2") add_reference(index, inspection.backing_file, file.path());
    } catch (const Error&) {
      // Unreadable or vanished (deleted meanwhile): it backs nothing we can see.
    }
  }
}

}  // namespace

std::vector<fs::path> UserIndex::users_of(const fs::path& base) const {
  std::vector<fs::path> users;
  auto add = [&users](const std::vector<fs::path>& found) {
    for (const auto& user : found) {
      if (std::find(users.begin(), users.end(), user) == users.end()) users.push_back(user);
    }
  };
  struct stat info {};
  if (::stat(base.c_str(), &info) == 0) {
    auto it = by_identity.find({static_cast<std::uint64_t>(info.st_dev), static_cast<std::uint64_t>(info.st_ino)});
    if (it != by_identity.end()) add(it->second);
  }
  if (auto it = by_base_name.find(base.filename().string()); it != by_base_name.end()) add(it->second);
  return users;
}

UserIndex scan_users(const fs::path& instances_path) {
  UserIndex index;
  std::error_code error;
  for (const auto& directory : fs::directory_iterator(instances_path, error)) {
    std::string name = directory.path().filename().string();
    if (name == "_base" || name == "locks" || !directory.is_directory(error)) continue;
    add_direct_users(directory.path(), index);
    add_disk_info_users(directory.path(), index);
    add_backing_users(directory.path(), index);
  }
  return index;
}

void touch_base(const fs::path& base) { ::utimensat(AT_FDCWD, base.c_str(), nullptr, 0); }

std::vector<CacheEntry> list_cache(const fs::path& instances_path) {
  std::vector<CacheEntry> entries;
  auto users = scan_users(instances_path);
  std::error_code error;
  for (const auto& file : fs::directory_iterator(instances_path / "_base", error)) {
    auto kind = kind_of(file.path().filename().string());
    if (!kind) continue;
    auto entry = describe_entry(file.path(), *kind);
    if (!entry) continue;
    entry->users = users.users_of(file.path());
    entries.push_back(std::move(*entry));
  }
  std::sort(entries.begin(), entries.end(),
            [](const CacheEntry& a, const CacheEntry& b) { return a.name < b.name; });
  return entries;
}

std::vector<VerifyResult> verify_cache(const fs::path& instances_path) {
  std::vector<VerifyResult> results;
  for (const auto& entry : list_cache(instances_path)) {
    if (entry.kind != BaseKind::kImage) continue;
    VerifyResult result{entry.name, "ok", "", "", ""};
    if (!entry.info) {
      result.state = "no-info";
    } else if (auto lock = FileLock::probe(lock_path(instances_path, entry.name)); !lock) {
      result.state = "busy";  // probed, not taken: verify creates and writes nothing
    } else {
      if (!entry.info->base_digest.empty()) {
        result.algorithm = std::string(DataDigest::kAlgorithm) + " " + DataDigest::kCovers;
        result.expected = entry.info->base_digest;
        result.actual = data_digest_of_file(entry.path);
      } else {
        result.algorithm = "sha256";
        result.expected = entry.info->base_sha256;
        result.actual = hex_digest_of_file("sha256", entry.path.string());
      }
      if (result.actual != result.expected) result.state = "rotted";
    }
    results.push_back(result);
  }
  return results;
}

namespace {

bool older_than(const fs::path& path, std::chrono::seconds age, Clock::time_point now) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0 && now - modified_at(info) > age;
}

// Temporaries whose base's lock is free (a crash left them: .part, .converted,
// .tmp, a conversion's private directory) and .info files without a base.
void repair_base_directory(const fs::path& instances_path, std::vector<RepairAction>& actions) {
  fs::path base_directory = instances_path / "_base";
  std::error_code error;
  std::vector<fs::path> files;
  for (const auto& file : fs::directory_iterator(base_directory, error)) files.push_back(file.path());
  for (const auto& path : files) {
    std::string name = path.filename().string();
    std::optional<std::string> leftover_owner = sandbox_leftover_owner(name);
    std::string owner = leftover_owner ? *leftover_owner : owner_name(name);
    bool temporary = is_temporary(name) || leftover_owner;
    bool orphan_info = has_suffix(name, ".info") && !fs::exists(base_directory / owner, error);
    if (!temporary && !orphan_info) continue;
    auto lock = FileLock::try_lock(lock_path(instances_path, owner));
    if (!lock) continue;  // its owner is at work
    if (fs::remove_all(path, error) > 0) {
      actions.push_back({path, temporary ? "removed stale temporary" : "removed .info without a base"});
      KILN_FAILPOINT("repair.removed_one");
    }
    if (!fs::exists(base_directory / owner, error)) lock->unlink_locked();
  }
}

// locks/: lock files of bases that are gone (taken, then unlinked under the
// lock) and failed-download records past their time to live.
void repair_lock_directory(const fs::path& instances_path, const CachePolicy& policy,
                           std::vector<RepairAction>& actions) {
  fs::path lock_directory = instances_path / "locks";
  std::error_code error;
  std::vector<std::string> names;
  for (const auto& file : fs::directory_iterator(lock_directory, error)) names.push_back(file.path().filename().string());
  auto now = Clock::now();
  for (const auto& name : names) {
    if (name.rfind("kiln-", 0) != 0) continue;  // kilnd.lock and anything not kiln's per-base locks
    if (has_suffix(name, ".failed.tmp")) {
      // A failed-download record a crash cut short (atomic_write_file's temporary).
      auto lock = FileLock::try_lock(lock_path(instances_path, name.substr(5, name.size() - 5 - 11)));
      if (lock && fs::remove(lock_directory / name, error)) {
        actions.push_back({lock_directory / name, "removed stale temporary"});
      }
      continue;
    }
    bool failed_record = has_suffix(name, ".failed");
    std::string base = failed_record ? owner_name(name).substr(5) : name.substr(5);
    if (failed_record && !older_than(lock_directory / name, policy.failed_download_ttl, now)) continue;
    if (!failed_record && (base.find('.') != std::string::npos || fs::exists(instances_path / "_base" / base, error))) {
      continue;
    }
    auto lock = FileLock::try_lock(lock_path(instances_path, base));
    if (!lock) continue;
    if (failed_record && fs::remove(lock_directory / name, error)) {
      actions.push_back({lock_directory / name, "removed expired failed-download record"});
    }
    if (!fs::exists(instances_path / "_base" / base, error)) {
      lock->unlink_locked();
      if (!failed_record) actions.push_back({lock_directory / name, "removed lock file of a base that is gone"});
    }
  }
}

}  // namespace

std::vector<RepairAction> repair_cache(const fs::path& instances_path, const CachePolicy& policy) {
  std::vector<RepairAction> actions;
  KILN_FAILPOINT("repair.begin");
  repair_base_directory(instances_path, actions);
  KILN_FAILPOINT("repair.base_directory_done");
  repair_lock_directory(instances_path, policy, actions);
  // The instances path's own temporaries (instance directories being built
  // or deleted, O_DIRECT probes), whose owners are gone.
  for (auto& [path, action] : remove_stale_temporaries(instances_path)) actions.push_back({path, action});
  return actions;
}

std::uint64_t cache_budget(const fs::path& instances_path, const CachePolicy& policy) {
  std::uint64_t budget = policy.max_cache_bytes;
  if (policy.max_cache_percent > 0) {
    std::uint64_t by_percent = filesystem_bytes(instances_path / "_base", false) / 100 * policy.max_cache_percent;
    budget = budget == 0 ? by_percent : std::min(budget, by_percent);
  }
  return budget;
}

std::vector<PruneDecision> prune_cache(const fs::path& instances_path, const CachePolicy& policy,
                                       Clock::time_point now, bool dry_run) {
  std::vector<PruneDecision> decisions;
  auto entries = list_cache(instances_path);
  std::uint64_t total = 0;
  for (const auto& entry : entries) total += entry.physical_bytes;
  std::uint64_t budget = cache_budget(instances_path, policy);
  std::string age_reason = "unused for more than " + std::to_string(policy.unused_minimum_age.count()) + " s";
  // Nova's aging, for every base when remove_unused_base_images allows it.
  auto aged = [&](const CacheEntry& entry) {
    return policy.remove_unused_base_images && now - entry.last_used > policy.unused_minimum_age;
  };
  // The budget is kiln's own and takes only what kiln made.
  auto over_budget = [&](const CacheEntry& entry) { return made_by_kiln(entry) && budget > 0 && total > budget; };

  for (const auto& entry : unused_oldest_first(instances_path)) {
    if (!aged(entry) && !over_budget(entry)) continue;
    PruneDecision decision{entry.name, entry.path, entry.physical_bytes,
                           aged(entry) ? age_reason : "over the cache budget of " + std::to_string(budget) + " bytes",
                           false};
    if (!dry_run) {
      decision.removed = remove_if_unused(instances_path, entry, [&](const CacheEntry& fresh) {
        return aged(fresh) || over_budget(fresh);
      });
    }
    if (dry_run || decision.removed) total -= std::min(total, entry.physical_bytes);
    decisions.push_back(decision);
  }
  return decisions;
}

RoomResult make_room(const fs::path& instances_path, std::uint64_t bytes, const CachePolicy& policy,
                     Clock::time_point now) {
  RoomResult result;
  fs::path base_directory = instances_path / "_base";
  auto evictable = [&](const CacheEntry& entry) {
    return made_by_kiln(entry) && now - entry.last_used > policy.eviction_minimum_age;
  };
  std::vector<CacheEntry> candidates;
  for (auto& entry : unused_oldest_first(instances_path)) {
    if (!evictable(entry)) continue;
    result.evictable_bytes += entry.physical_bytes;
    candidates.push_back(std::move(entry));
  }
  std::uint64_t available = filesystem_bytes(base_directory, true);
  result.fits = available + result.evictable_bytes >= bytes;
  if (!result.fits) return result;  // evicting would not make it fit: keep everything
  for (const auto& entry : candidates) {
    if (filesystem_bytes(base_directory, true) >= bytes) break;
    PruneDecision decision{entry.name, entry.path, entry.physical_bytes, "to make room", false};
    decision.removed = remove_if_unused(instances_path, entry, evictable);
    result.evicted.push_back(decision);
  }
  return result;
}

void to_json(nlohmann::json& out, const CacheEntry& entry) {
  bool missing_info = entry.kind == BaseKind::kImage && !entry.info;
  out = {{"name", entry.name},
         {"path", entry.path.string()},
         {"kind", kind_name(entry.kind)},
         {"physical_bytes", entry.physical_bytes},
         {"virtual_bytes", entry.virtual_bytes},
         {"in_use", entry.users.size()},
         {"last_used_at", format_time(entry.last_used)},
         {"state", missing_info ? "no-info" : "ok"}};
  if (entry.info) {
    out["image_id"] = entry.info->image_id;
    out["image_name"] = entry.info->name;
    out["disk_format"] = entry.info->disk_format;
    out["fetched_at"] = format_time(entry.info->fetched_at);
  }
  nlohmann::json users = nlohmann::json::array();
  for (const auto& user : entry.users) users.push_back(user.string());
  out["users"] = users;
}

void to_json(nlohmann::json& out, const VerifyResult& result) {
  out = {{"name", result.name}, {"state", result.state}, {"algorithm", result.algorithm},
         {"expected", result.expected}, {"actual", result.actual}};
}

void to_json(nlohmann::json& out, const RepairAction& action) {
  out = {{"path", action.path.string()}, {"action", action.action}};
}

void to_json(nlohmann::json& out, const PruneDecision& decision) {
  out = {{"name", decision.name}, {"path", decision.path.string()}, {"physical_bytes", decision.physical_bytes},
         {"reason", decision.reason}, {"removed", decision.removed}};
}

}  // namespace kiln::cache
