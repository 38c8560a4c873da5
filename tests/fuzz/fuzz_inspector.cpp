// libFuzzer target: any bytes, inspected as an image, must neither crash, nor
// read more than kMaxInspectionBytes, nor throw anything but an inspection
// verdict, nor be called safe while it names another file.
// Build and run (option KILN_FUZZ of the top-level CMakeLists.txt; seeds from make-seeds):
//   CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF
//   cmake --build build-fuzz --target fuzz_inspector
//   tests/fuzz/make-seeds seeds && build-fuzz/tests/fuzz/fuzz_inspector -max_total_time=60 corpus seeds
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kiln/image/inspector.h"
#include "kiln/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  kiln::image::InspectorPolicy policy;
  policy.max_virtual_size = std::uint64_t{1} << 40;
  kiln::image::Inspection inspection = kiln::image::inspect(kiln::image::MemorySource(bytes), policy);
  if (inspection.bytes_read > kiln::image::kMaxInspectionBytes) std::abort();
  if (inspection.format.empty()) std::abort();
  // An image called safe reaches no other file.
  if (inspection.safe()) {
    constexpr std::uint64_t kExternalDataFileBit = 1u << 2;
    bool references = !inspection.backing_file.empty() || !inspection.data_file.empty() ||
                      (inspection.incompatible_features & kExternalDataFileBit) != 0 ||
                      inspection.vmdk_extents.size() > 1 || inspection.format == "qed";
    if (references) std::abort();
  }
  // One verdict per input: a throw costs ~100 us under ASan, the inspection ~10 us.
  const char* disk_format = size % 2 == 0 ? "raw" : inspection.format.c_str();
  try {
    kiln::image::require_safe(inspection, disk_format, "fuzz");
    if (!inspection.safe()) std::abort();
  } catch (const kiln::Error& error) {
    // The only errors require_safe may raise are the four inspection verdicts.
    switch (error.code()) {
      case kiln::ErrorCode::kImageUnsafe:
      case kiln::ErrorCode::kImageMalformed:
      case kiln::ErrorCode::kImageTooLarge:
      case kiln::ErrorCode::kImageFormatMismatch:
        break;
      default:
        std::abort();
    }
  }
  return 0;
}
