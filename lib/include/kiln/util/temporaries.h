// kiln's temporaries at the top of instances_path, swept in one place (their
// names are built and parsed in kiln/util/layout.h).
//
// Promise: nothing kiln builds appears under its final name half-done. What
// is under construction or being torn down lives under a dot-name kiln alone
// makes, and each name says who owns it:
//   building (.<uuid>.building-XXXXXX)  an instance directory being built; its
//                             owner holds its instance lock (locks/instance-<uuid>)
//                             from before the directory exists until it is
//                             renamed to <uuid> or removed
//   deleting                  an instance directory being removed: nobody needs
//                             any of it, anyone may finish removing it
//   the O_DIRECT probe        (kiln/util/fs.h direct_io_probe_path); its prober
//                             holds an flock on it
//   the instance lock file itself
// remove_stale_temporaries() removes each one whose owner is gone (its lock
// is free), so a crash at any point leaves nothing a later sweep keeps.
// Safe to run while kiln works: what a live process owns is skipped.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

// Removes every temporary above whose owner is gone, and instance lock files
// nobody holds; returns (path, what was done) for each.
std::vector<std::pair<std::filesystem::path, std::string>> remove_stale_temporaries(
    const std::filesystem::path& instances_path);

}  // namespace kiln
