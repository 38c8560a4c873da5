// Formats qemu reads as raw: ISO 9660 / UDF, GPT and MBR partition tables,
// and anything unrecognised. None can point at another file; they are
// detected so that content and Glance's disk_format can be compared.
#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

// Volume descriptors start at 32 KiB, one per 2 KiB, each with its
// identifier at byte 1 (ECMA-119 for CD001, ECMA-167 for the UDF ones).
constexpr std::size_t kVolumeDescriptors = 32 * 1024;
constexpr std::size_t kVolumeDescriptorLength = 2048;
constexpr std::size_t kVolumeDescriptorCount = 16;
constexpr std::string_view kIso9660Identifier{"CD001"};
constexpr std::string_view kUdfIdentifiers[] = {"NSR02", "NSR03"};

constexpr std::size_t kMbrSignatureOffset = 510;
constexpr std::string_view kMbrSignature{"\x55\xaa", 2};
constexpr std::size_t kMbrPartitionTable = 446;
constexpr std::size_t kMbrPartitionEntryLength = 16;
constexpr std::size_t kMbrPartitionCount = 4;
constexpr std::size_t kMbrPartitionType = 4;
constexpr std::size_t kMbrPartitionSectors = 12;
constexpr unsigned char kMbrActive = 0x80;
constexpr std::string_view kGptSignature{"EFI PART"};
// The GPT header is in the second logical block: 512-byte or 4 KiB sectors.
constexpr std::size_t kGptHeaderOffsets[] = {512, 4096};

}  // namespace

bool looks_like_iso(const Sample& sample) {
  for (std::size_t index = 0; index < kVolumeDescriptorCount; ++index) {
    std::size_t identifier = kVolumeDescriptors + index * kVolumeDescriptorLength + 1;
    if (has_bytes_at(sample.head, identifier, kIso9660Identifier)) return true;
    for (auto udf : kUdfIdentifiers) {
      if (has_bytes_at(sample.head, identifier, udf)) return true;
    }
  }
  return false;
}

bool looks_like_gpt(const Sample& sample) {
  if (!has_bytes_at(sample.head, kMbrSignatureOffset, kMbrSignature)) return false;
  for (std::size_t offset : kGptHeaderOffsets) {
    if (has_bytes_at(sample.head, offset, kGptSignature)) return true;
  }
  return false;
}

// Boot flags are 0x00 or 0x80 and at least one partition is in use: a boot
// sector of a filesystem has the signature too, but not such a table.
bool looks_like_mbr(const Sample& sample) {
  if (!has_bytes_at(sample.head, kMbrSignatureOffset, kMbrSignature)) return false;
  bool any_partition = false;
  for (std::size_t index = 0; index < kMbrPartitionCount; ++index) {
    std::size_t entry = kMbrPartitionTable + index * kMbrPartitionEntryLength;
    auto boot_flag = static_cast<unsigned char>(sample.head[entry]);
    if (boot_flag != 0 && boot_flag != kMbrActive) return false;
    any_partition |= sample.head[entry + kMbrPartitionType] != 0 &&
                     load_little_32(sample.head, entry + kMbrPartitionSectors) != 0;
  }
  return any_partition;
}

void parse_raw_family(Reader&, const Sample& sample, const InspectorPolicy&,
                      Inspection& inspection) {
  inspection.virtual_size = sample.size;
}

}  // namespace kiln::image::detail
