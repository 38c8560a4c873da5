#include "kiln/disk/ephemeral.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/subprocess.h"

namespace kiln::disk {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;
constexpr std::string_view kWindowsOsType = "windows";
constexpr std::string_view kWindowsFilesystem = "ntfs";
constexpr std::string_view kLinuxOsType = "linux";
constexpr std::string_view kLinuxFilesystem = "ext4";
// mkfs.ext4 -F is quick, but a large vfat or ntfs format may take a while.
constexpr std::chrono::minutes kMkfsTimeout{10};
// glibc's execvp searches this when PATH is unset.
constexpr const char* kDefaultSearchPath = "/bin:/usr/bin";

// How each supported filesystem is made on a regular file. Nova runs
// `mkfs -t <fs>`; mkfs(8) is a deprecated front end that only execs
// mkfs.<fs>, so kiln runs that program directly: it can then tell whether
// it is installed before it creates anything, and errors name the real tool.
struct MkfsRecipe {
  std::string_view filesystem;
  std::string_view program;
  std::vector<std::string> options;  // before the target file
  std::string_view package;          // the Debian package that ships `program`
};

const std::vector<MkfsRecipe>& mkfs_recipes() {
  // -F: format a regular file without asking. Label ephemeral0 as Nova's
  // first ephemeral disk; the base is shared, so every disk made from it
  // carries that label. FAT labels are upper case by convention (mkfs.fat
  // warns about lower case ones). mkfs.ntfs -Q skips zeroing the whole file,
  // which would turn the sparse base into a full one.
  static const std::vector<MkfsRecipe> recipes = {
      {"ext3", "mkfs.ext3", {"-F", "-L", "ephemeral0"}, "e2fsprogs"},
      {"ext4", "mkfs.ext4", {"-F", "-L", "ephemeral0"}, "e2fsprogs"},
      {"vfat", "mkfs.vfat", {"-n", "EPHEMERAL0"}, "dosfstools"},
      {"ntfs", "mkfs.ntfs", {"-F", "-Q", "-L", "ephemeral0"}, "ntfs-3g"},
  };
  return recipes;
}

const MkfsRecipe& recipe_for(std::string_view filesystem) {
  for (const MkfsRecipe& recipe : mkfs_recipes()) {
    if (recipe.filesystem == filesystem) return recipe;
  }
  throw Error(ErrorCode::kInvalidArgument, "ephemeral filesystem '" + std::string(filesystem) +
                                               "' is not supported; use ext3, ext4, vfat or ntfs");
}

void check_size(std::uint64_t size_gb) {
  if (size_gb == 0 || size_gb > kMaxEphemeralGb) {
    throw Error(ErrorCode::kInvalidArgument, "ephemeral size " + std::to_string(size_gb) +
                                                 " GB is outside 1.." +
                                                 std::to_string(kMaxEphemeralGb) + " GB");
  }
}

// True when execvp would find `program`: an executable file in a PATH directory.
bool installed(std::string_view program) {
  const char* search_path = std::getenv("PATH");
  std::string_view directories = search_path != nullptr ? search_path : kDefaultSearchPath;
  while (!directories.empty()) {
    std::size_t colon = directories.find(':');
    std::string_view directory = directories.substr(0, colon);
    directories = colon == std::string_view::npos ? "" : directories.substr(colon + 1);
    if (directory.empty()) continue;  // the current directory: never trusted here
    fs::path candidate = fs::path(directory) / program;
    std::error_code error;
    if (fs::is_regular_file(candidate, error) && ::access(candidate.c_str(), X_OK) == 0)
      return true;
  }
  return false;
}

void check_installed(const MkfsRecipe& recipe) {
  if (!installed(recipe.program)) {
    throw Error(ErrorCode::kSubprocessFailed,
                "cannot make an " + std::string(recipe.filesystem) +
                    " ephemeral disk: " + std::string(recipe.program) +
                    " is not installed on this host (Debian package " +
                    std::string(recipe.package) + ")");
  }
}

void create_sparse_file(const fs::path& path, std::uint64_t size) {
  UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    throw_io_error("cannot size " + path.string(), errno);
  }
}

void make_filesystem(const MkfsRecipe& recipe, const fs::path& path) {
  std::vector<std::string> argv{std::string(recipe.program)};
  argv.insert(argv.end(), recipe.options.begin(), recipe.options.end());
  argv.push_back(path.string());
  run_checked({argv, {}, kMkfsTimeout});
}

void fsync_path(const fs::path& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  fsync_file(fd.get(), path);
}

}  // namespace

std::string ephemeral_filesystem_for(std::string_view os_type) {
  if (os_type == kWindowsOsType) return std::string(kWindowsFilesystem);
  if (os_type == kLinuxOsType) return std::string(kLinuxFilesystem);
  return std::string(kDefaultEphemeralFilesystem);
}

std::string ephemeral_base_name(std::uint64_t size_gb, std::string_view filesystem) {
  return layout::ephemeral_base_name(size_gb, filesystem);
}

EphemeralBase ensure_ephemeral_base(const fs::path& base_directory, const fs::path& lock_directory,
                                    std::uint64_t size_gb, std::string_view filesystem) {
  check_size(size_gb);
  const MkfsRecipe& recipe = recipe_for(filesystem);
  std::string name = ephemeral_base_name(size_gb, filesystem);
  std::uint64_t size = size_gb * kGiB;
  fs::path path = base_directory / name;
  FileLock lock(lock_directory / layout::base_lock_name(name));
  std::error_code error;
  if (fs::exists(fs::symlink_status(path, error))) {
    require_base_file(path, size);
    return {path, size, std::move(lock)};
  }

  // Only a base still to be made needs mkfs: one made elsewhere (shared
  // _base) is usable on a host without the tool.
  check_installed(recipe);
  TemporaryPath part(layout::part_path(path));
  fs::remove(part.path(), error);  // left by a crash; we hold the lock
  create_sparse_file(part.path(), size);
  KILN_FAILPOINT("ephemeral.part_created");
  make_filesystem(recipe, part.path());
  KILN_FAILPOINT("ephemeral.mkfs_done");
  fsync_path(part.path());
  publish_file(part.path(), path);
  KILN_FAILPOINT("ephemeral.published");
  part.keep();
  return {path, size, std::move(lock)};
}

}  // namespace kiln::disk
