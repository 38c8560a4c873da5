// LUKS (big-endian; cryptsetup's "LUKS On-Disk Format Specification"). qemu
// 7.2 opens LUKS version 1 only; the guest sees the payload after the header.
#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::string_view kMagic{"LUKS\xba\xbe", 6};
constexpr std::size_t kVersion = 6;
constexpr std::size_t kPayloadOffset = 104;  // in 512-byte sectors
constexpr std::size_t kVersion1HeaderLength = 592;

}  // namespace

bool looks_like_luks(const Sample& sample) { return has_bytes_at(sample.head, 0, kMagic); }

void parse_luks(Reader&, const Sample& sample, const InspectorPolicy&, Inspection& inspection) {
  inspection.format = "luks";
  if (sample.head.size() < kVersion + 2) {
    refuse_malformed("luks_truncated", "its luks header is cut short");
  }
  inspection.version = load_big_16(sample.head, kVersion);
  if (inspection.version != 1) {
    inspection.refusals.push_back({"luks_version",
                                   "it is luks version " + std::to_string(inspection.version) +
                                       "; qemu opens luks version 1 only",
                                   ErrorCode::kImageUnsafe});
    return;
  }
  if (sample.head.size() < kVersion1HeaderLength) {
    refuse_malformed("luks_truncated", "its luks header is cut short at " +
                                           bytes_phrase(sample.head.size()));
  }
  std::uint64_t payload = std::uint64_t{load_big_32(sample.head, kPayloadOffset)} * kSectorSize;
  if (payload > sample.size) {
    refuse_malformed("luks_payload_offset", "its luks payload starts past the end of the image");
  }
  inspection.virtual_size = sample.size - payload;
}

}  // namespace kiln::image::detail
