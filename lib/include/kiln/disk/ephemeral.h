// Ephemeral bases: _base/ephemeral_<GB>_<fs digest>, a raw file holding an
// empty filesystem, shared by every instance whose flavor has that much
// ephemeral disk formatted that way.
//
// The name is Nova's, so operators and tools that know Nova's _base
// recognise it: <fs digest> is the first 7 hex digits of the MD5 of the
// filesystem name (ext4 -> 40d1d2c, vfat -> 0706d66). A base is built like a
// swap base: as <name>.part, sparse (ftruncate), formatted by mkfs.<fs> with
// the label ephemeral0, fsync'd and renamed into place, all under the lock
// locks/kiln-<name>, which the returned lease keeps held so that the caller
// can create its overlay (disk.local) before anyone may prune the base. An
// existing base is reused as it is. Safe to call from several threads and
// processes at once: the lock serialises them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "kiln/util/lock.h"

namespace kiln::disk {

// nova's _DEFAULT_FILE_SYSTEM (nova/privsep/fs.py): the filesystem of an
// instance whose os_type is unset or unknown, when default_ephemeral_format is unset.
inline constexpr std::string_view kDefaultEphemeralFilesystem = "vfat";

// The largest ephemeral disk: the largest overlay kiln can put on it, in GiB.
inline constexpr std::uint64_t kMaxEphemeralGb = 2ULL << 20;  // 2 PiB

struct EphemeralBase {
  std::filesystem::path path;
  std::uint64_t size_bytes = 0;
  FileLock lock;
};

// The filesystem for an instance's os_type (the image's os_type property, ""
// when it has none) when [DEFAULT] default_ephemeral_format is unset, as
// nova's _DEFAULT_FS_BY_OSTYPE: "linux" -> ext4, "windows" -> ntfs, anything
// else (unset, unknown) -> vfat. Matched exactly, as nova matches it.
std::string ephemeral_filesystem_for(std::string_view os_type);

// Nova's base name, e.g. "ephemeral_20_40d1d2c" for 20 GB of ext4.
std::string ephemeral_base_name(std::uint64_t size_gb, std::string_view filesystem);

// Returns the base for `size_gb` GiB of `filesystem`, making it if needed,
// with its lock held. `filesystem` is one of ext3, ext4, vfat, ntfs.
// REQUIRES: base_directory exists; both directories are absolute.
// Throws kiln::Error kInvalidArgument (size 0 or above kMaxEphemeralGb, an
// unsupported filesystem), kSubprocessFailed (mkfs.<fs> is not installed —
// mkfs.ntfs comes with the optional package ntfs-3g — or failed), kIoError,
// kLockFailed. On failure no file is left under the base's name or .part.
EphemeralBase ensure_ephemeral_base(const std::filesystem::path& base_directory,
                                    const std::filesystem::path& lock_directory,
                                    std::uint64_t size_gb,
                                    std::string_view filesystem);

}  // namespace kiln::disk
