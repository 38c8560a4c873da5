#include "kiln/disk/overlay.h"

#include "kiln/disk/qcow2_overlay.h"
#include "kiln/util/error.h"
#include "kiln/util/subprocess.h"

namespace kiln::disk {

namespace {

void run_qemu_img_create(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                         std::uint64_t virtual_size) {
  // qemu-img would replace an existing file; the native writer's O_EXCL cannot.
  if (std::filesystem::exists(overlay)) {
    throw Error(ErrorCode::kIoError, "cannot create " + overlay.string() + ": it already exists");
  }
  run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing.string(),
                overlay.string(), std::to_string(virtual_size)},
               {},
               std::chrono::seconds(60)});
}

}  // namespace

void create_overlay(const std::filesystem::path& overlay, const std::filesystem::path& backing,
                    std::uint64_t virtual_size, OverlayWriter writer, Durability durability) {
  switch (writer) {
    case OverlayWriter::kNative:
      write_qcow2_overlay(overlay, backing, virtual_size, durability);
      return;
    case OverlayWriter::kQemuImg:
      check_overlay_request(backing, virtual_size);
      run_qemu_img_create(overlay, backing, virtual_size);
      return;
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown overlay writer");
}

}  // namespace kiln::disk
