#include "kiln/image/byte_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "kiln/util/error.h"

namespace kiln::image {

namespace {

// The bytes a read at `offset` can return without passing `size`.
std::size_t readable_length(std::uint64_t size, std::uint64_t offset, std::size_t length) {
  if (offset >= size) return 0;
  return static_cast<std::size_t>(std::min<std::uint64_t>(length, size - offset));
}

}  // namespace

FileSource::FileSource(const std::filesystem::path& path)
    : path_(path), fd_(open_file(path, O_RDONLY)) {
  struct stat info {};
  if (::fstat(fd_.get(), &info) != 0) throw_io_error("cannot stat " + path.string(), errno);
  if (!S_ISREG(info.st_mode)) {
    throw Error(ErrorCode::kIoError, "cannot inspect " + path.string() + ": not a regular file");
  }
  size_ = static_cast<std::uint64_t>(info.st_size);
}

std::string FileSource::read_at(std::uint64_t offset, std::size_t length) const {
  std::string bytes(readable_length(size_, offset, length), '\0');
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t count = ::pread(fd_.get(), bytes.data() + done, bytes.size() - done,
                            static_cast<off_t>(offset + done));
    if (count < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot read " + path_.string(), errno);
    }
    if (count == 0) break;  // the file shrank under us: report what is there
    done += static_cast<std::size_t>(count);
  }
  bytes.resize(done);
  return bytes;
}

std::string MemorySource::read_at(std::uint64_t offset, std::size_t length) const {
  std::size_t count = readable_length(bytes_.size(), offset, length);
  if (count == 0) return {};
  return std::string(bytes_.substr(static_cast<std::size_t>(offset), count));
}

}  // namespace kiln::image
