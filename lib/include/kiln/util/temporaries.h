// kiln's temporaries at the top of instances_path, named and swept in one place.
//
// Promise: nothing kiln builds appears under its final name half-done. What
// is under construction or being torn down lives under a dot-name kiln alone
// makes, and each name says who owns it:
//   .<uuid>.building-XXXXXX   an instance directory being built; its owner
//                             holds locks/instance-<uuid> (instance_lock_path)
//                             from before the directory exists until it is
//                             renamed to <uuid> or removed
//   .<uuid>.deleting-XXXXXX   an instance directory being removed: nobody needs
//                             any of it, anyone may finish removing it
//   .directio.test.<n>        the O_DIRECT probe (kiln/util/fs.h
//                             direct_io_probe_path); its prober holds an flock on it
//   locks/instance-<uuid>     the instance lock file itself
// remove_stale_temporaries() removes each one whose owner is gone (its lock
// is free), so a crash at any point leaves nothing a later sweep keeps.
// Safe to run while kiln works: what a live process owns is skipped.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

enum class TemporaryKind { kBuilding, kDeleting, kDirectIoProbe };

struct TopLevelTemporary {
  TemporaryKind kind;
  std::string uuid;  // of the instance (building, deleting); "" for the probe
};

// The mkdtemp(3) template for an instance directory under construction or
// removal: "<instances_path>/.<uuid>.building-XXXXXX".
std::string building_template(const std::filesystem::path& instances_path, const std::string& uuid);
std::string deleting_template(const std::filesystem::path& instances_path, const std::string& uuid);

// The lock a provision of `uuid` holds for its whole run.
std::filesystem::path instance_lock_path(const std::filesystem::path& instances_path, const std::string& uuid);

// What a name at the top of instances_path is, when it is one of kiln's temporaries.
std::optional<TopLevelTemporary> parse_temporary(const std::string& name);

// Removes every temporary above whose owner is gone, and instance lock files
// nobody holds; returns (path, what was done) for each.
std::vector<std::pair<std::filesystem::path, std::string>> remove_stale_temporaries(
    const std::filesystem::path& instances_path);

}  // namespace kiln
