#include "kiln/util/sparse_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln {

namespace {

constexpr std::size_t kBufferSize = 1024 * 1024;  // a multiple of kBlock
// Writeback is started every 8 MiB of file: large enough for the disk to
// merge requests, small enough that the final fsync has little to do.
constexpr std::uint64_t kWriteBehindWindow = 8 * 1024 * 1024;

}  // namespace

SparseWriter::SparseWriter(int fd, std::filesystem::path path_for_errors)
    : SparseWriter(fd, std::move(path_for_errors), Options{}) {}

SparseWriter::SparseWriter(int fd, std::filesystem::path path_for_errors, Options options)
    : fd_(fd), path_(std::move(path_for_errors)), options_(options) {
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

void SparseWriter::write_run(std::span<const char> run, std::uint64_t position) {
  while (!run.empty()) {
    ssize_t written = ::pwrite(fd_, run.data(), run.size(), static_cast<off_t>(position));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot write " + path_.string(), errno);
    }
    run = run.subspan(static_cast<std::size_t>(written));
    position += static_cast<std::uint64_t>(written);
  }
}

void SparseWriter::flush() {
  std::span<const char> pending(buffer_);
  std::size_t run_start = 0;  // index in buffer_ of the current run of data blocks
  std::size_t index = 0;
  while (index < pending.size()) {
    std::span<const char> block = pending.subspan(index, std::min(kBlock, pending.size() - index));
    if (all_zero(block)) {
      if (index > run_start) write_run(pending.subspan(run_start, index - run_start), offset_ + run_start);
      run_start = index + block.size();
    } else if (options_.digest != nullptr) {
      options_.digest->add_data_block(offset_ + index, block);
    }
    index += block.size();
  }
  if (index > run_start) write_run(pending.subspan(run_start, index - run_start), offset_ + run_start);
  offset_ += pending.size();
  buffer_.clear();
  if (options_.write_behind && offset_ - written_back_ >= kWriteBehindWindow) {
    // Starts writeback without waiting for it; holes in the range cost nothing.
    // Best effort: a filesystem without it (EINVAL, ESPIPE) is synced by fsync alone.
    ::sync_file_range(fd_, static_cast<off_t>(written_back_), static_cast<off_t>(offset_ - written_back_),
                      SYNC_FILE_RANGE_WRITE);
    written_back_ = offset_;
  }
}

void SparseWriter::finish() {
  flush();
  if (::ftruncate(fd_, static_cast<off_t>(offset_)) != 0) {
    throw_io_error("cannot set the size of " + path_.string(), errno);
  }
}

}  // namespace kiln
