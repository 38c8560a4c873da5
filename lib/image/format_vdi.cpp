// VirtualBox VDI (little-endian): a text banner, the signature at 0x40, and
// a fixed header; qemu block/vdi.c opens only dynamic and static images
// without a parent, with 512-byte sectors and 1 MiB blocks.
#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::uint32_t kSignature = 0xbeda107f;
constexpr std::size_t kSignatureOffset = 0x40;
constexpr std::size_t kVersion = 0x44;
constexpr std::size_t kImageType = 0x4c;
constexpr std::size_t kBlockMapOffset = 0x154;
constexpr std::size_t kDataOffset = 0x158;
constexpr std::size_t kSectorSizeField = 0x168;
constexpr std::size_t kDiskSize = 0x170;
constexpr std::size_t kBlockSize = 0x178;
constexpr std::size_t kBlocksInImage = 0x180;
constexpr std::size_t kLinkUuid = 0x1a8;
constexpr std::size_t kParentUuid = 0x1b8;
constexpr std::size_t kHeaderLength = 0x1c8;
constexpr std::size_t kUuidLength = 16;

constexpr std::uint32_t kVersion1_1 = 0x00010001;
constexpr std::uint32_t kDynamic = 1;
constexpr std::uint32_t kStatic = 2;
constexpr std::uint32_t kDifferencing = 4;
constexpr std::uint32_t kRequiredBlockSize = 1024 * 1024;
constexpr std::uint32_t kMaximumBlocks = 0x3fffffff / 4;  // qemu's VDI_BLOCKS_IN_IMAGE_MAX

bool is_nil_uuid(std::string_view head, std::size_t offset) {
  return head.substr(offset, kUuidLength).find_first_not_of('\0') == std::string_view::npos;
}

void check_parent(std::string_view head, std::uint32_t image_type, Inspection& inspection) {
  if (image_type != kDifferencing && is_nil_uuid(head, kLinkUuid) &&
      is_nil_uuid(head, kParentUuid)) {
    return;
  }
  inspection.refusals.push_back({"vdi_differencing",
                                 "it is a differencing vdi, whose parent image is elsewhere",
                                 ErrorCode::kImageUnsafe});
}

void check_layout(std::string_view head, std::uint64_t image_size, Inspection& inspection) {
  std::uint32_t block_size = load_little_32(head, kBlockSize);
  std::uint32_t blocks = load_little_32(head, kBlocksInImage);
  std::uint32_t block_map = load_little_32(head, kBlockMapOffset);
  std::uint32_t data = load_little_32(head, kDataOffset);
  if (load_little_32(head, kSectorSizeField) != kSectorSize || block_size != kRequiredBlockSize) {
    refuse_malformed("vdi_geometry", "its vdi sector or block size is not the 512 bytes and "
                                     "1 MiB qemu requires");
  }
  inspection.cluster_size = block_size;
  if (blocks > kMaximumBlocks || std::uint64_t{blocks} * block_size < inspection.virtual_size) {
    refuse_malformed("vdi_block_map", "its vdi block map is too large or too small for its size");
  }
  if (block_map % kSectorSize != 0 || data % kSectorSize != 0 ||
      !fits_within(block_map, std::uint64_t{blocks} * 4, image_size) || data > image_size) {
    refuse_malformed("vdi_block_map", "its vdi block map or data area is misaligned or lies "
                                      "past the end of the image");
  }
}

}  // namespace

bool looks_like_vdi(const Sample& sample) {
  return sample.head.size() >= kSignatureOffset + 4 &&
         load_little_32(sample.head, kSignatureOffset) == kSignature;
}

void parse_vdi(Reader&, const Sample& sample, const InspectorPolicy&, Inspection& inspection) {
  inspection.format = "vdi";
  std::string_view head = sample.head;
  if (head.size() < kHeaderLength) {
    refuse_malformed("vdi_truncated", "its vdi header is cut short at " + bytes_phrase(head.size()));
  }
  if (load_little_32(head, kVersion) != kVersion1_1) {
    refuse_malformed("vdi_version", "its vdi header version is not 1.1");
  }
  std::uint32_t image_type = load_little_32(head, kImageType);
  check_parent(head, image_type, inspection);
  if (image_type != kDynamic && image_type != kStatic && image_type != kDifferencing) {
    refuse_malformed("vdi_image_type", "its vdi image type " + std::to_string(image_type) +
                                           " is not dynamic, static or differencing");
  }
  // qemu counts whole sectors.
  inspection.virtual_size = load_little_64(head, kDiskSize) / kSectorSize * kSectorSize;
  check_layout(head, sample.size, inspection);
}

}  // namespace kiln::image::detail
