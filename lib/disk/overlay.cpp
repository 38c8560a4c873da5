#include "kiln/disk/overlay.h"

#include "kiln/util/error.h"
#include "kiln/util/subprocess.h"

namespace kiln::disk {

void create_overlay(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                    std::uint64_t virtual_size) {
  if (!backing.is_absolute()) {
    throw Error(ErrorCode::kInvalidArgument, "backing file " + backing.string() + " is not absolute");
  }
  if (std::filesystem::exists(overlay)) {
    throw Error(ErrorCode::kIoError, "cannot create " + overlay.string() + ": it already exists");
  }
  run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing.string(),
                overlay.string(), std::to_string(virtual_size)},
               {},
               std::chrono::seconds(60)});
}

}  // namespace kiln::disk
