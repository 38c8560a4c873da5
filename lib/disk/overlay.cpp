#include "kiln/disk/overlay.h"

#include "kiln/disk/qcow2_overlay.h"
#include "kiln/util/error.h"
#include "kiln/util/sandbox.h"
#include "kiln/util/subprocess.h"

namespace kiln::disk {

namespace {

// qcow2 metadata for the largest overlay is far below this: an L1 entry per
// 512 MiB and a few clusters of refcounts.
constexpr std::uint64_t kMaxQcow2HeaderBytes = 64ULL << 20;

// `qemu-img create`, sandboxed: it sees only the new file. -u: the backing
// file is recorded by its host path, never opened (check_overlay_request()
// checked it natively), so it need not be in the sandbox at all.
void run_qemu_img_create(const std::filesystem::path& path, std::vector<std::string> options,
                         std::uint64_t virtual_size) {
  // qemu-img would replace an existing file; the native writer's O_EXCL cannot.
  if (std::filesystem::exists(path)) {
    throw Error(ErrorCode::kIoError, "cannot create " + path.string() + ": it already exists");
  }
  SandboxOutput output(path);
  Sandbox sandbox;
  std::string image = sandbox.add_writable(output.path(), "image");
  std::vector<std::string> argv{"qemu-img", "create", "-q", "-f", "qcow2"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back(image);
  argv.push_back(std::to_string(virtual_size));
  ResourceLimits limits;
  limits.address_space_bytes = 1ULL << 30;
  limits.cpu_seconds = 30;
  limits.file_size_bytes = kMaxQcow2HeaderBytes;
  run_checked({std::move(argv), limits, std::chrono::seconds(60), std::move(sandbox)});
  output.publish();
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
      run_qemu_img_create(overlay, {"-u", "-F", "raw", "-b", backing.string()}, virtual_size);
      return;
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown overlay writer");
}

void create_blank_qcow2(const std::filesystem::path& path, std::uint64_t virtual_size) {
  run_qemu_img_create(path, {}, virtual_size);
}

}  // namespace kiln::disk
