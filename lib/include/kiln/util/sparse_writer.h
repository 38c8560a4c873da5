// Writes a stream of bytes to a file, leaving all-zero blocks as holes.
//
// Images are mostly zeros; skipping zero blocks saves disk and write
// bandwidth (qemu-img convert does the same with -S 4k). Bytes are buffered
// and examined in kBlock-sized blocks aligned to file offsets; finish() sets
// the final size so a trailing hole is part of the file. Not thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace kiln {

class SparseWriter {
 public:
  static constexpr std::size_t kBlock = 4096;

  // REQUIRES: `fd` is an empty regular file opened for writing, positioned at 0.
  SparseWriter(int fd, std::filesystem::path path_for_errors);

  void write(std::span<const char> data);
  // Flushes the buffer and sets the file size to the bytes written.
  void finish();
  std::uint64_t bytes_written() const { return offset_ + buffer_.size(); }

 private:
  void flush();

  int fd_;
  std::filesystem::path path_;
  std::uint64_t offset_ = 0;  // file offset of buffer_[0]
  std::vector<char> buffer_;
};

}  // namespace kiln
