// The native qcow2 overlay writer: an empty qcow2 image on a raw backing
// file, written by kiln itself instead of by a qemu-img process.
//
// Promise: the file is what `qemu-img create -f qcow2 -F raw -b <backing>
// <overlay> <size>` (QEMU 7.2) writes, byte for byte — a version 3 header
// (64 KiB clusters, 16-bit refcounts, 112-byte header with compression type
// zlib), the backing-format extension "raw", the feature name table, the
// absolute backing file name, then one cluster of refcount table, one
// refcount block counting every cluster the image uses, and an empty L1 table
// covering the virtual size. `qemu-img check` finds no errors and no leaks.
// The L1 table is left as a hole: its bytes read as zeros, as the format wants.
//
// The overlay is created with O_CREAT|O_EXCL at its final path and fsync'd;
// on failure nothing is left behind. Its directory is not fsync'd: the
// caller builds it in a construction area that it makes durable as a whole.
// Thread-safe: calls share no state, and O_EXCL lets only one of two calls
// for the same path succeed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "kiln/util/fs.h"

namespace kiln::disk {

// qcow2 stores the backing file name in at most 1023 bytes (qcow2.txt).
inline constexpr std::size_t kMaxBackingFileNameBytes = 1023;

// The largest virtual size qemu can open with 64 KiB clusters: QEMU limits an
// L1 table to 32 MiB (QCOW_MAX_L1_SIZE), 4 Mi entries of 512 MiB each = 2 PiB.
// qemu-img refuses anything larger, so both overlay writers refuse it too.
inline constexpr std::uint64_t kMaxOverlayVirtualSize = 2ULL << 50;

// Where an overlay of a given virtual size keeps its metadata. Offsets are in
// bytes from the start of the file; every table starts on a cluster boundary.
struct Qcow2OverlayLayout {
  std::uint64_t virtual_size = 0;  // after rounding up to 512 bytes
  std::uint64_t cluster_size = 0;
  std::uint64_t refcount_table_offset = 0;  // one cluster, one entry in use
  std::uint64_t refcount_block_offset = 0;  // one cluster
  std::uint64_t l1_table_offset = 0;
  std::uint32_t l1_entries = 0;  // one per 512 MiB of virtual size
  std::uint64_t l1_table_clusters = 0;
  std::uint64_t clusters_in_use = 0;  // header + refcount table + block + L1
  std::uint64_t file_size = 0;        // ends right after the L1 table, as qemu-img's
};

// The virtual size an overlay asked for `requested_bytes` gets. qemu-img
// silently rounds a qcow2 image's size up to a multiple of 512 bytes
// (block/qcow2.c, qcow2_co_create_opts: "Silently round up size"); kiln does
// the same so that both writers produce the same image for the same request.
// Throws kiln::Error kInvalidArgument unless 0 < requested_bytes <=
// kMaxOverlayVirtualSize.
std::uint64_t overlay_virtual_size(std::uint64_t requested_bytes);

// The layout of an overlay of `requested_bytes` (rounded as above); throws
// as overlay_virtual_size() does.
Qcow2OverlayLayout qcow2_overlay_layout(std::uint64_t requested_bytes);

// The checks every overlay writer applies before it touches the disk: the
// backing path is absolute, at most kMaxBackingFileNameBytes long and exists;
// the size is above 0 and at most kMaxOverlayVirtualSize. Throws kiln::Error
// kInvalidArgument, or kNotFound when the backing file does not exist.
void check_overlay_request(const std::filesystem::path& backing, std::uint64_t requested_bytes);

// Writes a new qcow2 overlay at `overlay` backed by the raw file `backing`
// with virtual size overlay_virtual_size(requested_bytes); no subprocess.
// REQUIRES: the caller holds the base's lock. Throws what
// check_overlay_request() throws, and kIoError if `overlay` already exists or
// cannot be written (then no file is left at `overlay`).
void write_qcow2_overlay(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                         std::uint64_t requested_bytes, Durability durability = Durability::kSynced);

}  // namespace kiln::disk
