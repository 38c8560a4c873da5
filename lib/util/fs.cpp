#include "kiln/util/fs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/layout.h"

namespace kiln {

namespace fs = std::filesystem;

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

UniqueFd open_file(const fs::path& path, int flags, unsigned mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_io_error("cannot open " + path.string(), errno);
  return UniqueFd(fd);
}

void write_all(int fd, std::span<const char> data, const fs::path& path_for_errors) {
  while (!data.empty()) {
    ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot write " + path_for_errors.string(), errno);
    }
    data = data.subspan(static_cast<std::size_t>(written));
  }
}

void fsync_file(int fd, const fs::path& path_for_errors) {
  if (::fsync(fd) != 0) throw_io_error("cannot fsync " + path_for_errors.string(), errno);
}

void fsync_directory(const fs::path& directory) {
  UniqueFd fd = open_file(directory, O_RDONLY | O_DIRECTORY);
  fsync_file(fd.get(), directory);
}

void fsync_together(const std::vector<fs::path>& paths) {
  std::vector<int> errors(paths.size(), 0);
  {
    std::vector<std::jthread> syncs;
    syncs.reserve(paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) {
      syncs.emplace_back([&, i] {
        int fd = ::open(paths[i].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
          errors[i] = errno;
          return;
        }
        if (::fsync(fd) != 0) errors[i] = errno;
        ::close(fd);
      });
    }
  }
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (errors[i] != 0) throw_io_error("cannot fsync " + paths[i].string(), errors[i]);
  }
}

bool is_regular_file_of_size(const fs::path& path, std::uint64_t size) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return false;
  return S_ISREG(info.st_mode) && static_cast<std::uint64_t>(info.st_size) == size;
}

void require_base_file(const fs::path& path, std::uint64_t size) {
  if (is_regular_file_of_size(path, size)) return;
  struct stat info {};
  std::string what = ::lstat(path.c_str(), &info) != 0 ? "is missing"
                     : S_ISLNK(info.st_mode)            ? "is a symbolic link"
                     : !S_ISREG(info.st_mode)           ? "is not a regular file"
                                                        : "has " + std::to_string(info.st_size) + " bytes";
  throw Error(ErrorCode::kIoError, path.string() + " " + what + ", not a regular file of " + std::to_string(size) +
                                       " bytes: no overlay is made on it (remove it to have kiln make it again)");
}

void write_new_file(const fs::path& path, std::string_view content, unsigned mode) {
  UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  write_all(fd.get(), content, path);
}

void atomic_write_file(const fs::path& path, std::string_view content, unsigned mode) {
  TemporaryPath temporary(layout::atomic_temporary_path(path));
  {
    // A leftover .tmp (a crash) or one planted as a symlink is unlinked, never
    // followed: the new one is created exclusively, so a link that reappears
    // in between fails the write instead of redirecting it.
    if (::unlink(temporary.path().c_str()) != 0 && errno != ENOENT) {
      throw_io_error("cannot remove " + temporary.path().string(), errno);
    }
    UniqueFd fd = open_file(temporary.path(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    write_all(fd.get(), content, temporary.path());
    fsync_file(fd.get(), temporary.path());
  }
  publish_file(temporary.path(), path);
  temporary.keep();
}

void publish_file(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw_io_error("cannot rename " + from.string() + " to " + to.string(), errno);
  }
  fsync_directory(to.parent_path().empty() ? fs::path(".") : to.parent_path());
}

std::uint64_t file_size(const fs::path& path) {
  std::error_code error;
  auto size = fs::file_size(path, error);
  if (error) throw_io_error("cannot stat " + path.string(), error.value());
  return size;
}

std::uint64_t available_bytes(const fs::path& directory) {
  struct statvfs info {};
  if (::statvfs(directory.c_str(), &info) != 0) throw_io_error("cannot statvfs " + directory.string(), errno);
  return static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
}

std::string read_file(const fs::path& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  std::string content;
  char buffer[8192];
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot read " + path.string(), errno);
    }
    if (got == 0) break;
    content.append(buffer, static_cast<std::size_t>(got));
  }
  return content;
}

fs::path direct_io_probe_path(const fs::path& directory) {
  return directory / layout::direct_io_probe_name();
}

bool supports_direct_io(const fs::path& directory) {
  fs::path probe = direct_io_probe_path(directory);
  TemporaryPath cleanup(probe);
  KILN_FAILPOINT("probe.directio.before_create");
  int fd = ::open(probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  UniqueFd owned(fd);
  // Held while the probe exists: a sweep (kiln/util/temporaries.h) removes
  // only a probe nobody holds, one a crash left.
  (void)::flock(fd, LOCK_EX | LOCK_NB);
  KILN_FAILPOINT("probe.directio.created");
  constexpr std::size_t kBlock = 4096;
  std::unique_ptr<void, decltype(&std::free)> block(std::aligned_alloc(kBlock, kBlock), &std::free);
  if (!block) return false;
  std::memset(block.get(), 0, kBlock);
  return ::write(fd, block.get(), kBlock) == static_cast<ssize_t>(kBlock);
}

TemporaryPath::TemporaryPath(TemporaryPath&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

TemporaryPath& TemporaryPath::operator=(TemporaryPath&& other) noexcept {
  if (this != &other) {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

TemporaryPath::~TemporaryPath() {
  if (path_.empty()) return;
  std::error_code ignored;  // best effort: a destructor must not throw
  fs::remove_all(path_, ignored);
}

}  // namespace kiln
