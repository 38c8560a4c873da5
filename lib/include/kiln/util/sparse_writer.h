// Writes a stream of bytes to a file, leaving all-zero blocks as holes.
//
// Images are mostly zeros; skipping zero blocks saves disk and write
// bandwidth (qemu-img convert does the same with -S 4k). Bytes are buffered
// and examined in kBlock-sized blocks aligned to file offsets; each run of
// data blocks in the 1 MiB buffer goes to the file in one pwrite (a 300 MiB
// image is a few hundred writes, not 77,000). finish() sets the final size so
// a trailing hole is part of the file.
//
// Options: a DataDigest (kiln/util/data_digest.h) fed every data block as it
// is written, so a raw base's digest costs no second pass; and write-behind,
// which starts the writeback of each few MiB written (sync_file_range) so the
// fsync that makes the file durable finds little left to write. Write-behind
// only starts writeback: durability still needs the caller's fsync. A file
// that will be thrown away (a .part that is converted) wants neither.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace kiln {

class DataDigest;

class SparseWriter {
 public:
  static constexpr std::size_t kBlock = 4096;

  struct Options {
    DataDigest* digest = nullptr;  // fed every data block, in order; not owned
    bool write_behind = false;
  };

  // REQUIRES: `fd` is an empty regular file opened for writing.
  SparseWriter(int fd, std::filesystem::path path_for_errors);
  SparseWriter(int fd, std::filesystem::path path_for_errors, Options options);

  void write(std::span<const char> data);
  // Flushes the buffer and sets the file size to the bytes written.
  void finish();
  std::uint64_t bytes_written() const { return offset_ + buffer_.size(); }

 private:
  void flush();
  void write_run(std::span<const char> run, std::uint64_t position);

  int fd_;
  std::filesystem::path path_;
  Options options_;
  std::uint64_t offset_ = 0;        // file offset of buffer_[0]
  std::uint64_t written_back_ = 0;  // writeback started for [0, written_back_)
  std::vector<char> buffer_;
};

}  // namespace kiln
