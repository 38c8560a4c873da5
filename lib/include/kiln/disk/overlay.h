// qcow2 overlays: an instance's writable disk on top of a shared raw base.
//
// The overlay names its backing file by absolute path with backing format
// "raw" pinned in the header, so qemu never probes the base's format. Its
// virtual size may exceed the base's (the guest sees zeros past the base's
// end) but never be smaller: shrinking would cut the guest's filesystem.
#pragma once

#include <cstdint>
#include <filesystem>

namespace kiln::disk {

// Creates `overlay` (which must not exist) backed by the raw file `backing`.
// REQUIRES: `backing` is absolute; the caller holds the base's lock.
// Throws kiln::Error kSubprocessFailed / kIoError.
void create_overlay(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                    std::uint64_t virtual_size);

}  // namespace kiln::disk
