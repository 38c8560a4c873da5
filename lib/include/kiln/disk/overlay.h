// qcow2 overlays: an instance's writable disk on top of a shared raw base.
//
// The overlay names its backing file by absolute path with backing format
// "raw" pinned in the header, so qemu never probes the base's format. Its
// virtual size may exceed the base's (the guest sees zeros past the base's
// end) but never be smaller: shrinking would cut the guest's filesystem.
//
// Two writers make the same image: kiln's own (qcow2_overlay.h, no process)
// and `qemu-img create`, kept as the reference and as a fallback an operator
// can choose. Both accept and refuse exactly the same requests.
#pragma once

#include <cstdint>
#include <filesystem>

#include "kiln/util/fs.h"

namespace kiln::disk {

enum class OverlayWriter {
  kNative,   // write_qcow2_overlay(): the metadata written directly, then fsync'd
  kQemuImg,  // qemu-img create -f qcow2 -F raw -b <backing> <overlay> <size>
};

// Creates `overlay` (which must not exist) backed by the raw file `backing`,
// with virtual size `virtual_size` rounded up to a multiple of 512 bytes.
// REQUIRES: the caller holds the base's lock. Throws kiln::Error
// kInvalidArgument (backing not absolute or too long, size 0 or above
// kMaxOverlayVirtualSize), kNotFound (no backing file), kIoError (the overlay
// exists or cannot be written), kSubprocessFailed (qemu-img failed).
// With Durability::kCallerSyncs the native writer skips its fsync (qemu-img
// never fsyncs).
void create_overlay(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                    std::uint64_t virtual_size, OverlayWriter writer = OverlayWriter::kNative,
                    Durability durability = Durability::kSynced);

// `qemu-img create -f qcow2 <path> <virtual_size>` in kiln's sandbox: an empty
// disk with no backing file (an ISO boot's root disk). Throws kIoError when
// `path` exists, kSubprocessFailed when qemu-img fails.
void create_blank_qcow2(const std::filesystem::path& path, std::uint64_t virtual_size);

}  // namespace kiln::disk
