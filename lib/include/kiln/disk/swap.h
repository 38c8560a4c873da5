// Swap bases: _base/swap_<MB>, a raw file with a Linux swap signature,
// shared by every instance whose flavor has that much swap.
//
// Built as _base/swap_<MB>.part, signed by mkswap, fsync'd and renamed, under
// the lock locks/kiln-swap_<MB>, which the returned lease keeps held so that
// the caller can create its disk.swap overlay before anyone may prune it.
#pragma once

#include <cstdint>
#include <filesystem>

#include "kiln/util/lock.h"

namespace kiln::disk {

struct SwapBase {
  std::filesystem::path path;
  std::uint64_t size_bytes = 0;
  FileLock lock;
};

std::string swap_base_name(std::uint64_t size_mb);

// REQUIRES: size_mb > 0; base_directory and lock_directory are absolute.
SwapBase ensure_swap_base(const std::filesystem::path& base_directory,
                          const std::filesystem::path& lock_directory, std::uint64_t size_mb);

}  // namespace kiln::disk
