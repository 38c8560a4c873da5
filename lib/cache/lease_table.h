// One process's holds on base locks, so that one boot may take a base twice.
//
// A boot whose kernel and ramdisk are one image asks for that base twice
// while holding it; two flocks on one file conflict even inside one process,
// so a second FileLock would wait for the first forever. The table hands the
// thread that already holds a base the same hold (reference-counted); other
// threads of the process wait for it as other processes wait for the flock,
// and every wait has a deadline.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>

namespace kiln::cache {

// Holds the flock on `lock_path` until the last copy of the result goes.
// Throws kiln::Error kLockFailed after `timeout`, naming the holder.
std::shared_ptr<void> take_base_lock(const std::filesystem::path& lock_path, std::chrono::milliseconds timeout);

}  // namespace kiln::cache
