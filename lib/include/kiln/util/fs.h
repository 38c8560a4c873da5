// Filesystem primitives with the durability kiln's crash-safety rests on.
//
// Promise: a file published with atomic_write_file() or publish_file() is
// either absent or complete under its final name, even across a power loss:
// data is fsync'd before the rename and the directory is fsync'd after it.
// Every descriptor is owned by a UniqueFd; every temporary by a TemporaryPath
// that removes it unless the work succeeded. All failures throw kiln::Error
// with code kIoError naming the path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

// Owns one file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();

 private:
  int fd_ = -1;
};

// open(2) that throws kIoError naming `path` on failure. O_CLOEXEC is always added.
UniqueFd open_file(const std::filesystem::path& path, int flags, unsigned mode = 0644);

// Writes every byte of `data` at the current offset, retrying short writes and EINTR.
void write_all(int fd, std::span<const char> data, const std::filesystem::path& path_for_errors);

void fsync_file(int fd, const std::filesystem::path& path_for_errors);
void fsync_directory(const std::filesystem::path& directory);

// Whether a writer fsyncs what it wrote before returning, or leaves that to
// its caller, which batches it with fsync_together().
enum class Durability {
  kSynced,
  kCallerSyncs,
};

// fsyncs every file and directory in `paths`, concurrently: concurrent fsyncs
// on one journaling filesystem share a journal commit, so N of them cost about
// one (6 files: 38 ms one after another, 7 ms together on this project's test
// VM). Throws kIoError for the first path that fails, after all have finished.
void fsync_together(const std::vector<std::filesystem::path>& paths);

// Creates `path` (which must not exist) with `content`, without fsync: for
// files inside a directory under construction, which its builder makes
// durable at once with fsync_together() before the directory counts as built.
// Whether `path` itself (not what a symlink there points at) is a regular
// file of exactly `size` bytes. False when it does not exist.
bool is_regular_file_of_size(const std::filesystem::path& path, std::uint64_t size);

// Throws kIoError unless is_regular_file_of_size(): an overlay may point only
// at a shared base that is what kiln made, never at a link planted in its place.
void require_base_file(const std::filesystem::path& path, std::uint64_t size);

void write_new_file(const std::filesystem::path& path, std::string_view content, unsigned mode = 0644);

// Writes `content` to `<path>.tmp`, fsyncs it, renames it over `path` and
// fsyncs the parent directory. Readers see the old file or the new one.
void atomic_write_file(const std::filesystem::path& path, std::string_view content,
                       unsigned mode = 0644);

// rename(2) `from` to `to` and fsync the directory of `to`. REQUIRES: `from`
// was already fsync'd, both on one filesystem.
void publish_file(const std::filesystem::path& from, const std::filesystem::path& to);

std::uint64_t file_size(const std::filesystem::path& path);

// Bytes an unprivileged writer may still use on the filesystem of `directory`.
std::uint64_t available_bytes(const std::filesystem::path& directory);

// Reads a whole (small) file; throws kIoError if it cannot.
std::string read_file(const std::filesystem::path& path);

// True when files in `directory` can be opened with O_DIRECT (probed with a
// temporary file, as Nova does to choose cache="none").
bool supports_direct_io(const std::filesystem::path& directory);

// The probe's name: "<directory>/" + layout::direct_io_probe_name(). The
// prober holds an flock on it, so a sweep (kiln/util/temporaries.h) removes
// only one a crash left.
std::filesystem::path direct_io_probe_path(const std::filesystem::path& directory);

// A path to remove (recursively) on destruction unless keep() was called:
// the RAII owner of every temporary and half-built artefact.
class TemporaryPath {
 public:
  TemporaryPath() = default;
  explicit TemporaryPath(std::filesystem::path path) : path_(std::move(path)) {}
  TemporaryPath(TemporaryPath&& other) noexcept;
  TemporaryPath& operator=(TemporaryPath&& other) noexcept;
  TemporaryPath(const TemporaryPath&) = delete;
  TemporaryPath& operator=(const TemporaryPath&) = delete;
  ~TemporaryPath();

  const std::filesystem::path& path() const { return path_; }
  // The path stays; this object no longer removes it.
  void keep() { path_.clear(); }

 private:
  std::filesystem::path path_;
};

}  // namespace kiln
