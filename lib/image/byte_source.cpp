#include "kiln/image/byte_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "kiln/util/error.h"

namespace kiln::image {

namespace {

// The bytes a read at `offset` can return without passing `size`.
std::size_t readable_length(std::uint64_t size, std::uint64_t offset, std::size_t length) {
  if (offset >= size) return 0;
  return static_cast<std::size_t>(std::min<std::uint64_t>(length, size - offset));
}

// What a file that is not a regular file is, for the refusal's sentence.
std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

[[noreturn]] void refuse_kind(const std::filesystem::path& path, mode_t mode) {
  throw Error(ErrorCode::kInvalidArgument, "cannot inspect " + path.string() + ": it is " +
                                               file_kind(mode) + ", not a regular file");
}

// Opens `path` for reading without ever blocking or following a final
// symbolic link: a FIFO would block open(2) and read(2) until a writer came,
// a device could be a disk of the host. lstat() keeps such files from being
// opened at all; fstat() of what was opened closes the race with a rename.
UniqueFd open_regular_file(const std::filesystem::path& path) {
  struct stat before {};
  if (::lstat(path.c_str(), &before) != 0) throw_io_error("cannot open " + path.string(), errno);
  if (!S_ISREG(before.st_mode)) refuse_kind(path, before.st_mode);
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ELOOP) refuse_kind(path, S_IFLNK);
  if (fd < 0) throw_io_error("cannot open " + path.string(), errno);
  UniqueFd file(fd);
  struct stat opened {};
  if (::fstat(file.get(), &opened) != 0) throw_io_error("cannot stat " + path.string(), errno);
  if (!S_ISREG(opened.st_mode)) refuse_kind(path, opened.st_mode);
  return file;
}

}  // namespace

FileSource::FileSource(const std::filesystem::path& path)
    : path_(path), fd_(open_regular_file(path)) {
  struct stat info {};
  if (::fstat(fd_.get(), &info) != 0) throw_io_error("cannot stat " + path.string(), errno);
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
