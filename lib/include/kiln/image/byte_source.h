// Where the format inspector reads an image's bytes from.
//
// The inspector never needs a whole image, only a few headers at known
// offsets, so its input is a ByteSource: a size and positioned reads. A
// FileSource reads an open file with pread(2) (nothing is mapped, nothing is
// read ahead); a MemorySource reads a buffer the caller owns, which is how the
// fuzzer and the tests drive the inspector without touching the disk.
// Sources are immutable after construction and safe for concurrent reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "kiln/util/fs.h"

namespace kiln::image {

class ByteSource {
 public:
  virtual ~ByteSource() = default;

  // The number of bytes the source holds, fixed for its lifetime.
  virtual std::uint64_t size() const = 0;

  // Up to `length` bytes starting at `offset`: fewer only when the source
  // ends first, none when `offset` is at or past the end. Throws kiln::Error
  // kIoError when the underlying read fails.
  virtual std::string read_at(std::uint64_t offset, std::size_t length) const = 0;
};

// An open regular file. `path` is opened with O_NONBLOCK and O_NOFOLLOW: a
// FIFO, a device, a directory, a socket or a symbolic link is refused at
// once with kInvalidArgument, never waited on. Throws kIoError naming `path`
// when it cannot be opened or read.
class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::filesystem::path& path);

  std::uint64_t size() const override { return size_; }
  std::string read_at(std::uint64_t offset, std::size_t length) const override;

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
};

// A buffer in memory. REQUIRES: `bytes` outlives the source.
class MemorySource : public ByteSource {
 public:
  explicit MemorySource(std::string_view bytes) : bytes_(bytes) {}

  std::uint64_t size() const override { return bytes_.size(); }
  std::string read_at(std::uint64_t offset, std::size_t length) const override;

 private:
  std::string_view bytes_;
};

}  // namespace kiln::image
