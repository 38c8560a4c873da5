#include "kiln/disk/swap.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/subprocess.h"

namespace kiln::disk {

namespace fs = std::filesystem;

std::string swap_base_name(std::uint64_t size_mb) { return layout::swap_base_name(size_mb); }

SwapBase ensure_swap_base(const fs::path& base_directory, const fs::path& lock_directory,
                          std::uint64_t size_mb) {
  std::string name = swap_base_name(size_mb);
  std::uint64_t size = size_mb * 1024 * 1024;
  fs::path path = base_directory / name;
  FileLock lock(lock_directory / layout::base_lock_name(name));
  std::error_code error;
  if (fs::exists(fs::symlink_status(path, error))) {
    require_base_file(path, size);
    return {path, size, std::move(lock)};
  }

  TemporaryPath part(layout::part_path(path));
  fs::remove(part.path(), error);
  {
    UniqueFd fd = open_file(part.path(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      throw_io_error("cannot size " + part.path().string(), errno);
    }
  }
  KILN_FAILPOINT("swap.part_created");
  run_checked({{"mkswap", part.path().string()}, {}, std::chrono::seconds(60)});
  KILN_FAILPOINT("swap.mkswap_done");
  {
    UniqueFd fd = open_file(part.path(), O_RDONLY);
    fsync_file(fd.get(), part.path());
  }
  publish_file(part.path(), path);
  KILN_FAILPOINT("swap.published");
  part.keep();
  return {path, size, std::move(lock)};
}

}  // namespace kiln::disk
