#include "kiln/util/sparse_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln {

namespace {

constexpr std::size_t kBufferSize = 1024 * 1024;  // a multiple of kBlock

bool all_zero(std::span<const char> block) {
  return std::all_of(block.begin(), block.end(), [](char c) { return c == 0; });
}

}  // namespace

SparseWriter::SparseWriter(int fd, std::filesystem::path path_for_errors)
    : fd_(fd), path_(std::move(path_for_errors)) {
  buffer_.reserve(kBufferSize);
}

void SparseWriter::write(std::span<const char> data) {
  while (!data.empty()) {
    std::size_t take = std::min(data.size(), kBufferSize - buffer_.size());
    buffer_.insert(buffer_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
    data = data.subspan(take);
    if (buffer_.size() == kBufferSize) flush();
  }
}

void SparseWriter::flush() {
  std::span<const char> pending(buffer_);
  std::uint64_t position = offset_;
  while (!pending.empty()) {
    std::span<const char> block = pending.first(std::min(kBlock, pending.size()));
    if (!all_zero(block)) {
      if (::lseek(fd_, static_cast<off_t>(position), SEEK_SET) < 0) {
        throw_io_error("cannot seek in " + path_.string(), errno);
      }
      write_all(fd_, block, path_);
    }
    position += block.size();
    pending = pending.subspan(block.size());
  }
  offset_ = position;
  buffer_.clear();
}

void SparseWriter::finish() {
  flush();
  if (::ftruncate(fd_, static_cast<off_t>(offset_)) != 0) {
    throw_io_error("cannot set the size of " + path_.string(), errno);
  }
}

}  // namespace kiln
