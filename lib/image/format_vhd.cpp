// vhd ("Virtual Hard Disk Image Format Specification", qemu's "vpc") and
// vhdx ("[MS-VHDX]"). vhd is big-endian: a 512-byte footer at the end of the
// file, copied to offset 0 in dynamic and differencing images, whose dynamic
// header points at the block allocation table. vhdx is little-endian: a file
// identifier, two headers, two region tables and a metadata table holding the
// virtual size. Differencing images of either kind name a parent file.
#include <array>

#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::string_view kVhdFooterCookie{"conectix"};
constexpr std::string_view kVhdDynamicCookie{"cxsparse"};
constexpr std::size_t kVhdFooterLength = 512;
constexpr std::size_t kVhdDynamicHeaderLength = 1024;

// vhd footer fields (byte offsets).
constexpr std::size_t kVhdDataOffset = 16;
constexpr std::size_t kVhdCreatorApplication = 28;
constexpr std::size_t kVhdCurrentSize = 48;
constexpr std::size_t kVhdCylinders = 56;
constexpr std::size_t kVhdHeads = 58;
constexpr std::size_t kVhdSectorsPerTrack = 59;
constexpr std::size_t kVhdDiskType = 60;
constexpr std::size_t kVhdChecksum = 64;
constexpr std::uint32_t kVhdFixed = 2;
constexpr std::uint32_t kVhdDynamic = 3;
constexpr std::uint32_t kVhdDifferencing = 4;

// vhd dynamic header fields.
constexpr std::size_t kVhdTableOffset = 16;
constexpr std::size_t kVhdMaxTableEntries = 28;
constexpr std::size_t kVhdBlockSize = 32;
constexpr std::size_t kVhdParentName = 64;  // 512 bytes of UTF-16 big-endian
constexpr std::size_t kVhdParentNameLength = 512;
constexpr std::uint32_t kVhdMaximumTableEntries = 0x7fffffff / 4;  // qemu's limit

// Virtual PC and qemu's own "qemu" images size the disk by its CHS geometry;
// these creators use the footer's current size (qemu block/vpc.c's table),
// as does any image whose geometry is the largest CHS can express.
constexpr std::array<std::string_view, 5> kVhdCreatorsUsingCurrentSize{
    std::string_view{"win "}, std::string_view{"qem2"}, std::string_view{"d2v "},
    std::string_view{"CTXS"}, std::string_view{"tap\0", 4}};
constexpr std::uint64_t kVhdMaximumGeometrySectors = 65535ull * 16 * 255;
constexpr std::uint64_t kVhdMaximumSectors = 0xff000000;  // qemu: 2040 GiB

// vhdx structures.
constexpr std::string_view kVhdxFileIdentifier{"vhdxfile"};
constexpr std::string_view kVhdxHeaderSignature{"head"};
constexpr std::string_view kVhdxRegionSignature{"regi"};
constexpr std::string_view kVhdxMetadataSignature{"metadata"};
constexpr std::uint64_t kVhdxHeaderOffsets[] = {64 * 1024, 128 * 1024};
constexpr std::size_t kVhdxHeaderLength = 80;  // through the log offset
constexpr std::size_t kVhdxVersion = 66;
constexpr std::uint16_t kVhdxCurrentVersion = 1;
constexpr std::uint64_t kVhdxRegionTableOffset = 192 * 1024;
constexpr std::size_t kVhdxTableHeaderLength = 16;
constexpr std::size_t kVhdxEntryCount = 8;  // u32 in region tables
constexpr std::size_t kVhdxEntryLength = 32;
constexpr std::uint32_t kVhdxMaximumEntries = 2047;
constexpr std::size_t kVhdxRegionFileOffset = 16;
constexpr std::size_t kVhdxRegionLength = 24;
constexpr std::size_t kVhdxRegionRequired = 28;
constexpr std::size_t kVhdxMetadataTableHeaderLength = 32;
constexpr std::size_t kVhdxMetadataEntryCount = 10;  // u16
constexpr std::size_t kVhdxItemOffset = 16;
constexpr std::size_t kVhdxItemLength = 20;
constexpr std::uint64_t kVhdxMinimumBlockSize = 1024 * 1024;
constexpr std::uint64_t kVhdxMaximumBlockSize = 256 * 1024 * 1024;
constexpr std::uint64_t kVhdxMaximumVirtualSize = 64ull * 1024 * 1024 * 1024 * 1024;
constexpr std::uint32_t kVhdxHasParentFlag = 1u << 1;

// GUIDs as [MS-VHDX] writes them; guid_bytes() gives their on-disk form.
constexpr std::string_view kVhdxBatRegion{"2DC27766-F623-4200-9D64-115E9BFD4A08"};
constexpr std::string_view kVhdxMetadataRegion{"8B7CA206-4790-4B9A-B8FE-575F050F886E"};
constexpr std::string_view kVhdxFileParameters{"CAA16737-FA36-4D43-B3B6-33F0AA44E76B"};
constexpr std::string_view kVhdxVirtualDiskSize{"2FA54224-CD1B-4876-B211-5DBED83BF4B8"};
constexpr std::string_view kVhdxParentLocator{"A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"};

// ----- vhd -----

std::uint32_t vhd_checksum(std::string_view footer) {
  std::uint32_t sum = 0;
  for (std::size_t index = 0; index < footer.size(); ++index) {
    if (index >= kVhdChecksum && index < kVhdChecksum + 4) continue;
    sum += static_cast<unsigned char>(footer[index]);
  }
  return ~sum;
}

// The footer qemu uses: the copy at offset 0 when there is one, else the end.
std::string_view vhd_footer(const Sample& sample) {
  if (has_bytes_at(sample.head, 0, kVhdFooterCookie)) {
    if (sample.head.size() < kVhdFooterLength) {
      refuse_malformed("vhd_truncated", "its vhd footer copy is cut short");
    }
    return std::string_view(sample.head).substr(0, kVhdFooterLength);
  }
  return std::string_view(sample.tail).substr(sample.tail.size() - kVhdFooterLength);
}

std::uint64_t vhd_virtual_size(std::string_view footer) {
  std::uint64_t geometry_sectors = std::uint64_t{load_big_16(footer, kVhdCylinders)} *
                                   static_cast<unsigned char>(footer[kVhdHeads]) *
                                   static_cast<unsigned char>(footer[kVhdSectorsPerTrack]);
  std::string_view creator = footer.substr(kVhdCreatorApplication, 4);
  bool uses_current_size = geometry_sectors == kVhdMaximumGeometrySectors;
  for (auto known : kVhdCreatorsUsingCurrentSize) uses_current_size |= creator == known;
  std::uint64_t sectors =
      uses_current_size ? load_big_64(footer, kVhdCurrentSize) / kSectorSize : geometry_sectors;
  if (sectors > kVhdMaximumSectors) {
    refuse_malformed("vhd_size", "its vhd size is above the format's 2040 GiB limit");
  }
  return sectors * kSectorSize;
}

// The parent's name, ASCII kept and anything else shown as '?'.
std::string vhd_parent_name(std::string_view dynamic_header) {
  std::string name;
  std::string_view utf16 = dynamic_header.substr(kVhdParentName, kVhdParentNameLength);
  for (std::size_t index = 0; index + 1 < utf16.size(); index += 2) {
    std::uint16_t unit = load_big_16(utf16, index);
    if (unit == 0) break;
    name += unit < 0x80 ? static_cast<char>(unit) : '?';
  }
  return name;
}

void parse_vhd_dynamic_header(Reader& reader, std::string_view footer, std::uint32_t disk_type,
                              Inspection& inspection) {
  std::string header = reader.read_exact(load_big_64(footer, kVhdDataOffset),
                                         kVhdDynamicHeaderLength, "vhd_dynamic_header",
                                         "its vhd dynamic header");
  if (!has_bytes_at(header, 0, kVhdDynamicCookie)) {
    refuse_malformed("vhd_dynamic_header", "its vhd dynamic header has no cxsparse cookie");
  }
  if (disk_type == kVhdDifferencing) {
    inspection.backing_file = vhd_parent_name(header);
    inspection.refusals.push_back({"vhd_differencing",
                                   "it is a differencing vhd of parent " +
                                       quoted_name(inspection.backing_file) +
                                       ", which qemu would open from the host",
                                   ErrorCode::kImageUnsafe});
  }
  std::uint32_t block_size = load_big_32(header, kVhdBlockSize);
  std::uint32_t entries = load_big_32(header, kVhdMaxTableEntries);
  if (!is_power_of_two(block_size) || block_size < kSectorSize) {
    refuse_malformed("vhd_block_size", "its vhd block size " + std::to_string(block_size) +
                                           " is not a power of two of at least 512");
  }
  inspection.cluster_size = block_size;
  if (entries > kVhdMaximumTableEntries ||
      std::uint64_t{entries} * block_size < inspection.virtual_size ||
      !fits_within(load_big_64(header, kVhdTableOffset), std::uint64_t{entries} * 4,
                   reader.size())) {
    refuse_malformed("vhd_block_table",
                     "its vhd block allocation table is too small for its size, too large, or "
                     "lies past the end of the image");
  }
}

// ----- vhdx -----

// "8B7CA206-4790-4B9A-B8FE-575F050F886E" as stored: the first three groups
// little-endian, the last two as written.
std::string guid_bytes(std::string_view text) {
  std::string hex;
  for (char character : text) {
    if (character != '-') hex += character;
  }
  auto byte_at = [&](std::size_t index) {
    return static_cast<char>(std::stoi(hex.substr(index * 2, 2), nullptr, 16));
  };
  constexpr std::array<std::size_t, 16> kStoredOrder{3, 2, 1, 0, 5, 4, 7, 6,
                                                     8, 9, 10, 11, 12, 13, 14, 15};
  std::string bytes;
  for (std::size_t index : kStoredOrder) bytes += byte_at(index);
  return bytes;
}

// qemu picks the valid header with the higher sequence number; one valid header is enough here.
void require_current_header(Reader& reader) {
  bool found = false;
  for (std::uint64_t offset : kVhdxHeaderOffsets) {
    std::string header = reader.read_exact(offset, kVhdxHeaderLength, "vhdx_header",
                                           "its vhdx header");
    found |= has_bytes_at(header, 0, kVhdxHeaderSignature) &&
             load_little_16(header, kVhdxVersion) == kVhdxCurrentVersion;
  }
  if (!found) refuse_malformed("vhdx_header", "neither vhdx header is valid");
}

// A table's entries: a header with an entry count, then fixed-size entries.
std::string read_table(Reader& reader, std::uint64_t offset, std::size_t header_length,
                       std::uint32_t entries, const std::string& rule, std::string_view what) {
  if (entries > kVhdxMaximumEntries) refuse_malformed(rule, std::string(what) + " has too many entries");
  return reader.read_exact(offset + header_length, entries * kVhdxEntryLength, rule, what);
}

struct Region {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

Region find_metadata_region(Reader& reader) {
  std::string header = reader.read_exact(kVhdxRegionTableOffset, kVhdxTableHeaderLength,
                                         "vhdx_region_table", "its vhdx region table");
  if (!has_bytes_at(header, 0, kVhdxRegionSignature)) {
    refuse_malformed("vhdx_region_table", "its vhdx region table has no regi signature");
  }
  std::string entries =
      read_table(reader, kVhdxRegionTableOffset, kVhdxTableHeaderLength,
                 load_little_32(header, kVhdxEntryCount), "vhdx_region_table",
                 "its vhdx region table");
  const std::string metadata_guid = guid_bytes(kVhdxMetadataRegion);
  const std::string bat_guid = guid_bytes(kVhdxBatRegion);
  Region metadata;
  for (std::size_t at = 0; at < entries.size(); at += kVhdxEntryLength) {
    std::string_view guid = std::string_view(entries).substr(at, 16);
    if (guid == metadata_guid) {
      metadata.offset = load_little_64(entries, at + kVhdxRegionFileOffset);
      metadata.length = load_little_32(entries, at + kVhdxRegionLength);
    } else if (guid != bat_guid && (load_little_32(entries, at + kVhdxRegionRequired) & 1u)) {
      refuse_malformed("vhdx_region_table", "its vhdx region table requires an unknown region");
    }
  }
  if (metadata.length < kVhdxMetadataTableHeaderLength ||
      !fits_within(metadata.offset, metadata.length, reader.size())) {
    refuse_malformed("vhdx_metadata", "its vhdx metadata region is missing or lies past the end "
                                      "of the image");
  }
  return metadata;
}

struct MetadataItems {
  std::string file_parameters;
  std::string virtual_disk_size;
  bool parent_locator = false;
};

MetadataItems read_metadata_items(Reader& reader, const Region& region) {
  std::string header = reader.read_exact(region.offset, kVhdxMetadataTableHeaderLength,
                                         "vhdx_metadata", "its vhdx metadata table");
  if (!has_bytes_at(header, 0, kVhdxMetadataSignature)) {
    refuse_malformed("vhdx_metadata", "its vhdx metadata table has no metadata signature");
  }
  std::string entries = read_table(reader, region.offset, kVhdxMetadataTableHeaderLength,
                                   load_little_16(header, kVhdxMetadataEntryCount),
                                   "vhdx_metadata", "its vhdx metadata table");
  const std::string file_parameters_guid = guid_bytes(kVhdxFileParameters);
  const std::string virtual_disk_size_guid = guid_bytes(kVhdxVirtualDiskSize);
  const std::string parent_locator_guid = guid_bytes(kVhdxParentLocator);
  MetadataItems items;
  for (std::size_t at = 0; at < entries.size(); at += kVhdxEntryLength) {
    std::string_view guid = std::string_view(entries).substr(at, 16);
    std::uint64_t offset = load_little_32(entries, at + kVhdxItemOffset);
    std::uint64_t length = load_little_32(entries, at + kVhdxItemLength);
    bool file_parameters = guid == file_parameters_guid;
    bool virtual_disk_size = guid == virtual_disk_size_guid;
    items.parent_locator |= guid == parent_locator_guid;
    if (!file_parameters && !virtual_disk_size) continue;
    if (length != 8 || !fits_within(offset, length, region.length)) {
      refuse_malformed("vhdx_metadata", "a vhdx metadata item lies outside its region");
    }
    std::string value = reader.read_exact(region.offset + offset, 8, "vhdx_metadata",
                                          "a vhdx metadata item");
    (file_parameters ? items.file_parameters : items.virtual_disk_size) = value;
  }
  if (items.file_parameters.empty() || items.virtual_disk_size.empty()) {
    refuse_malformed("vhdx_metadata", "its vhdx metadata lacks the file parameters or the "
                                      "virtual disk size");
  }
  return items;
}

}  // namespace

bool looks_like_vhd(const Sample& sample) {
  return has_bytes_at(sample.head, 0, kVhdFooterCookie) ||
         (sample.tail.size() >= kVhdFooterLength &&
          has_bytes_at(sample.tail, sample.tail.size() - kVhdFooterLength, kVhdFooterCookie));
}

void parse_vhd(Reader& reader, const Sample& sample, const InspectorPolicy&,
               Inspection& inspection) {
  inspection.format = "vhd";
  std::string_view footer = vhd_footer(sample);
  if (vhd_checksum(footer) != load_big_32(footer, kVhdChecksum)) {
    refuse_malformed("vhd_checksum", "its vhd footer checksum does not match its content");
  }
  std::uint32_t disk_type = load_big_32(footer, kVhdDiskType);
  if (disk_type != kVhdFixed && disk_type != kVhdDynamic && disk_type != kVhdDifferencing) {
    refuse_malformed("vhd_disk_type", "its vhd disk type " + std::to_string(disk_type) +
                                          " is not fixed, dynamic or differencing");
  }
  inspection.virtual_size = vhd_virtual_size(footer);
  if (disk_type == kVhdFixed) {
    // The guest's bytes come first, then the footer: a larger size is a lie.
    if (inspection.virtual_size > sample.size - kVhdFooterLength) {
      refuse_malformed("vhd_size", "its fixed vhd footer claims " +
                                       bytes_phrase(inspection.virtual_size) +
                                       " but the image holds less data");
    }
    return;
  }
  parse_vhd_dynamic_header(reader, footer, disk_type, inspection);
}

bool looks_like_vhdx(const Sample& sample) {
  return has_bytes_at(sample.head, 0, kVhdxFileIdentifier);
}

void parse_vhdx(Reader& reader, const Sample&, const InspectorPolicy&, Inspection& inspection) {
  inspection.format = "vhdx";
  require_current_header(reader);
  MetadataItems items = read_metadata_items(reader, find_metadata_region(reader));
  std::uint32_t block_size = load_little_32(items.file_parameters, 0);
  std::uint32_t flags = load_little_32(items.file_parameters, 4);
  inspection.virtual_size = load_little_64(items.virtual_disk_size, 0);
  if (!is_power_of_two(block_size) || block_size < kVhdxMinimumBlockSize ||
      block_size > kVhdxMaximumBlockSize) {
    refuse_malformed("vhdx_block_size", "its vhdx block size " + std::to_string(block_size) +
                                            " is not a power of two from 1 MiB to 256 MiB");
  }
  inspection.cluster_size = block_size;
  if ((flags & kVhdxHasParentFlag) || items.parent_locator) {
    inspection.refusals.push_back({"vhdx_differencing",
                                   "it is a differencing vhdx whose parent qemu would open from "
                                   "the host",
                                   ErrorCode::kImageUnsafe});
  }
  if (inspection.virtual_size == 0 || inspection.virtual_size > kVhdxMaximumVirtualSize) {
    refuse_malformed("vhdx_size", "its vhdx virtual size is zero or above the format's 64 TiB");
  }
}

}  // namespace kiln::image::detail
