// The base's digest for scrubbing: XXH3-128 over the data of a file, holes
// accounted for by their offsets, so that it costs only the data to compute.
//
// Definition ("xxh3-128", covering "data-extents"): XXH3-128 of, for each
// 4 KiB block of the file (at offsets 0, 4096, ...; the last may be short)
// that is not all zeros, in offset order, its offset as 8 bytes
// little-endian followed by its bytes; then the file size as 8 bytes
// little-endian. A hole, or a run of zeros, adds nothing but moves the next
// block's offset, so the digest depends only on the content, never on how the
// filesystem allocated it (a copy with its holes filled has the same digest),
// and a file can be digested by reading its data extents only (SEEK_DATA /
// SEEK_HOLE): a sparse 1 GiB base with 300 MiB of data costs 300 MiB of reads.
//
// Why not sha256 of every byte, as the base's digest was before: it is not a
// defence against an attacker (one who can write _base can write the .info
// too); it detects rot, which a 128-bit non-cryptographic hash does as well
// as sha256, at ~10 GB/s instead of ~0.3-2 GB/s. And it is computed as the base
// is written (raw images) or from the data extents of qemu-img's output
// (converted ones), never over the zeros of a hole.
//
// A DataDigest is not thread-safe: one per stream.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

namespace kiln {

// True when every byte of `bytes` is zero (memcmp against zeros: vectorised).
bool all_zero(std::span<const char> bytes);

class DataDigest {
 public:
  static constexpr std::size_t kBlock = 4096;
  static constexpr const char* kAlgorithm = "xxh3-128";
  static constexpr const char* kCovers = "data-extents";

  DataDigest();
  DataDigest(DataDigest&&) noexcept;
  DataDigest& operator=(DataDigest&&) noexcept;
  ~DataDigest();

  // Feeds the bytes of the file at `offset`. REQUIRES: `offset` is a multiple
  // of kBlock and past everything fed before; `data` ends on a block
  // boundary, or at the end of the file. Zero blocks are skipped here.
  void add(std::uint64_t offset, std::span<const char> data);
  // Feeds one block the caller already knows is not all zeros (a writer that
  // scanned it). Same REQUIREs, one block at most.
  void add_data_block(std::uint64_t offset, std::span<const char> block);
  // The lowercase hex digest (32 characters) of a file of `file_size` bytes.
  // REQUIRES: called once, nothing fed past file_size.
  std::string hex_digest(std::uint64_t file_size);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The DataDigest of the file at `path` (not followed if a symlink), reading
// only its data extents. Throws kiln::Error kIoError naming the path.
std::string data_digest_of_file(const std::filesystem::path& path);

}  // namespace kiln
