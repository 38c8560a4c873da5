// qcow2 and QED headers (qemu docs/interop/qcow2.txt, docs/interop/qed_spec.txt).
// qcow2 is big-endian, QED little-endian. Limits mirror those qemu enforces
// when it opens an image, so what the inspector passes qemu can open.
#include <string>

#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::string_view kQcow2Magic{"QFI\xfb", 4};
constexpr std::string_view kQedMagic{"QED\0", 4};

// qcow2 header fields (byte offsets).
constexpr std::size_t kQcow2Version = 4;
constexpr std::size_t kQcow2BackingFileOffset = 8;
constexpr std::size_t kQcow2BackingFileSize = 16;
constexpr std::size_t kQcow2ClusterBits = 20;
constexpr std::size_t kQcow2Size = 24;
constexpr std::size_t kQcow2CryptMethod = 32;
constexpr std::size_t kQcow2L1Size = 36;
constexpr std::size_t kQcow2L1TableOffset = 40;
constexpr std::size_t kQcow2RefcountTableOffset = 48;
constexpr std::size_t kQcow2RefcountTableClusters = 56;
constexpr std::size_t kQcow2SnapshotCount = 60;
constexpr std::size_t kQcow2SnapshotsOffset = 64;
constexpr std::size_t kQcow2IncompatibleFeatures = 72;
constexpr std::size_t kQcow2CompatibleFeatures = 80;
constexpr std::size_t kQcow2AutoclearFeatures = 88;
constexpr std::size_t kQcow2RefcountOrder = 96;
constexpr std::size_t kQcow2HeaderLength = 100;
constexpr std::size_t kQcow2CompressionType = 104;

constexpr std::size_t kQcow2Version2HeaderLength = 72;
constexpr std::size_t kQcow2Version3MinimumHeaderLength = 104;
constexpr std::uint32_t kQcow2MinimumClusterBits = 9;
constexpr std::uint32_t kQcow2MaximumClusterBits = 21;  // qemu's 2 MiB cluster limit
constexpr std::uint32_t kQcow2MaximumRefcountOrder = 6;
constexpr std::uint32_t kQcow2MaximumBackingFileSize = 1023;
constexpr std::uint32_t kQcow2CryptLuks = 2;
constexpr std::uint8_t kQcow2CompressionZstd = 1;
// qemu refuses an active L1 table above 32 MiB, a refcount table above 8 MiB
// and more than 65536 snapshots.
constexpr std::uint64_t kQcow2MaximumL1Entries = 32 * 1024 * 1024 / 8;
constexpr std::uint64_t kQcow2MaximumRefcountTableBytes = 8 * 1024 * 1024;
constexpr std::uint32_t kQcow2MaximumSnapshots = 65536;

// Incompatible feature bits.
constexpr std::uint64_t kQcow2DirtyBit = 1u << 0;
constexpr std::uint64_t kQcow2CorruptBit = 1u << 1;
constexpr std::uint64_t kQcow2ExternalDataFileBit = 1u << 2;
constexpr std::uint64_t kQcow2CompressionTypeBit = 1u << 3;
constexpr std::uint64_t kQcow2ExtendedL2Bit = 1u << 4;
constexpr std::uint64_t kQcow2KnownIncompatibleFeatures = kQcow2DirtyBit | kQcow2CorruptBit |
                                                          kQcow2ExternalDataFileBit |
                                                          kQcow2CompressionTypeBit |
                                                          kQcow2ExtendedL2Bit;

// Header extension types.
constexpr std::uint32_t kQcow2ExtensionEnd = 0x00000000;
constexpr std::uint32_t kQcow2ExtensionDataFile = 0x44415441;
constexpr std::size_t kQcow2ExtensionHeaderLength = 8;
// Longest data file name kept for the report; qemu itself takes any length.
constexpr std::size_t kMaxReportedFileName = 4096;

// QED header fields (byte offsets, little-endian).
constexpr std::size_t kQedClusterSize = 4;
constexpr std::size_t kQedFeatures = 16;
constexpr std::size_t kQedImageSize = 48;
constexpr std::size_t kQedBackingFileOffset = 56;
constexpr std::size_t kQedBackingFileSize = 60;
constexpr std::size_t kQedHeaderLength = 64;
constexpr std::uint64_t kQedBackingFileBit = 1u << 0;
constexpr std::uint32_t kQedMaximumBackingFileSize = 1023;

struct Qcow2Header {
  std::uint32_t version = 0;
  std::uint64_t cluster_size = 0;
  std::uint64_t header_length = 0;
  std::uint64_t backing_file_offset = 0;
};

std::string bit_list(std::uint64_t bits) {
  std::string list;
  for (unsigned bit = 0; bit < 64; ++bit) {
    if ((bits >> bit) & 1u) list += (list.empty() ? "" : ", ") + std::to_string(bit);
  }
  return list;
}

Qcow2Header read_fixed_header(const Sample& sample, Inspection& inspection) {
  const std::string& head = sample.head;
  if (head.size() < kQcow2Version2HeaderLength) {
    refuse_malformed("qcow2_truncated", "its qcow2 header is cut short at " +
                                            bytes_phrase(head.size()));
  }
  Qcow2Header header;
  header.version = load_big_32(head, kQcow2Version);
  inspection.version = header.version;
  if (header.version != 2 && header.version != 3) {
    refuse_malformed("qcow2_version",
                     "it claims qcow2 version " + std::to_string(header.version) +
                         "; only versions 2 and 3 exist");
  }
  std::uint32_t cluster_bits = load_big_32(head, kQcow2ClusterBits);
  if (cluster_bits < kQcow2MinimumClusterBits || cluster_bits > kQcow2MaximumClusterBits) {
    refuse_malformed("qcow2_cluster_bits", "its qcow2 cluster_bits is " +
                                               std::to_string(cluster_bits) +
                                               ", outside qemu's range 9 to 21");
  }
  header.cluster_size = std::uint64_t{1} << cluster_bits;
  inspection.cluster_size = header.cluster_size;
  inspection.virtual_size = load_big_64(head, kQcow2Size);
  header.backing_file_offset = load_big_64(head, kQcow2BackingFileOffset);
  header.header_length = kQcow2Version2HeaderLength;
  return header;
}

void read_version3_fields(const Sample& sample, Qcow2Header& header, Inspection& inspection) {
  const std::string& head = sample.head;
  if (head.size() < kQcow2Version3MinimumHeaderLength) {
    refuse_malformed("qcow2_truncated", "its qcow2 version 3 header is cut short at " +
                                            bytes_phrase(head.size()));
  }
  header.header_length = load_big_32(head, kQcow2HeaderLength);
  if (header.header_length < kQcow2Version3MinimumHeaderLength ||
      header.header_length > header.cluster_size) {
    refuse_malformed("qcow2_header_length",
                     "its qcow2 header_length is " + std::to_string(header.header_length) +
                         ", not between 104 and the cluster size");
  }
  if (head.size() < header.header_length) {
    refuse_malformed("qcow2_truncated", "its qcow2 header of " +
                                            bytes_phrase(header.header_length) +
                                            " is cut short at " + bytes_phrase(head.size()));
  }
  inspection.incompatible_features = load_big_64(head, kQcow2IncompatibleFeatures);
  inspection.compatible_features = load_big_64(head, kQcow2CompatibleFeatures);
  inspection.autoclear_features = load_big_64(head, kQcow2AutoclearFeatures);
  std::uint32_t refcount_order = load_big_32(head, kQcow2RefcountOrder);
  if (refcount_order > kQcow2MaximumRefcountOrder) {
    refuse_malformed("qcow2_refcount_order", "its qcow2 refcount_order is " +
                                                 std::to_string(refcount_order) +
                                                 ", above the maximum of 6");
  }
  if (header.header_length > kQcow2CompressionType) {
    auto compression_type = static_cast<std::uint8_t>(head[kQcow2CompressionType]);
    bool declared = (inspection.incompatible_features & kQcow2CompressionTypeBit) != 0;
    if (compression_type > kQcow2CompressionZstd || (compression_type != 0) != declared) {
      refuse_malformed("qcow2_compression_type",
                       "its qcow2 compression type " + std::to_string(compression_type) +
                           " is unknown or disagrees with the compression type feature bit");
    }
  }
}

// Refusals that leave the header readable: they are all reported together.
void check_features(const Sample& sample, Inspection& inspection) {
  std::uint64_t unknown = inspection.incompatible_features & ~kQcow2KnownIncompatibleFeatures;
  if (unknown != 0) {
    inspection.refusals.push_back(
        {"qcow2_unknown_incompatible_features",
         "it sets qcow2 incompatible feature bits kiln does not know (" + bit_list(unknown) +
             "), whose meaning qemu may not share",
         ErrorCode::kImageUnsafe});
  }
  std::uint32_t crypt_method = load_big_32(sample.head, kQcow2CryptMethod);
  if (crypt_method > kQcow2CryptLuks) {
    refuse_malformed("qcow2_crypt_method",
                     "its qcow2 crypt_method is " + std::to_string(crypt_method) +
                         "; only 0 (none), 1 (aes) and 2 (luks) exist");
  }
  if (crypt_method != 0) {
    inspection.refusals.push_back({"qcow2_encrypted",
                                   "it is an encrypted qcow2, which cannot be converted "
                                   "without a key kiln does not have",
                                   ErrorCode::kImageUnsafe});
  }
}

void check_backing_file(Reader& reader, const Sample& sample, const Qcow2Header& header,
                        Inspection& inspection) {
  if (header.backing_file_offset == 0) return;
  std::uint32_t length = load_big_32(sample.head, kQcow2BackingFileSize);
  inspection.refusals.push_back({"qcow2_backing_file",
                                 "it is a qcow2 with a backing file, which qemu would open "
                                 "from the host",
                                 ErrorCode::kImageUnsafe});
  if (length > kQcow2MaximumBackingFileSize || header.backing_file_offset > header.cluster_size) {
    refuse_malformed("qcow2_backing_file_name",
                     "its qcow2 backing file name lies outside the first cluster or is longer "
                     "than 1023 bytes");
  }
  inspection.backing_file = reader.read_exact(header.backing_file_offset, length,
                                              "qcow2_backing_file_name",
                                              "its qcow2 backing file name");
  inspection.refusals.back().sentence =
      "it is a qcow2 with backing file " + quoted_name(inspection.backing_file) +
      ", which qemu would open from the host";
}

// Walks the header extensions between header_length and the backing file
// name (or the end of the first cluster), looking for an external data file.
void read_header_extensions(const Sample& sample, const Qcow2Header& header,
                            Inspection& inspection) {
  std::uint64_t end = header.cluster_size;
  if (header.backing_file_offset != 0 && header.backing_file_offset < end) {
    end = header.backing_file_offset;
  }
  std::uint64_t offset = header.header_length;
  while (offset + kQcow2ExtensionHeaderLength <= end) {
    if (offset + kQcow2ExtensionHeaderLength > sample.head.size()) {
      refuse_malformed("qcow2_header_extension",
                       "its qcow2 header extensions run past the end of the image or past the "
                       "first 64 KiB");
    }
    auto at = static_cast<std::size_t>(offset);
    std::uint32_t type = load_big_32(sample.head, at);
    std::uint32_t length = load_big_32(sample.head, at + 4);
    if (type == kQcow2ExtensionEnd) return;
    std::uint64_t data = offset + kQcow2ExtensionHeaderLength;
    if (!fits_within(data, length, end) || !fits_within(data, length, sample.head.size())) {
      refuse_malformed("qcow2_header_extension",
                       "a qcow2 header extension of " + bytes_phrase(length) +
                           " runs past the header area");
    }
    if (type == kQcow2ExtensionDataFile) {
      std::size_t kept = std::min<std::size_t>(length, kMaxReportedFileName);
      inspection.data_file = sample.head.substr(static_cast<std::size_t>(data), kept);
    }
    // Extension data is padded to a multiple of 8 bytes.
    offset = data + ((std::uint64_t{length} + 7) & ~std::uint64_t{7});
  }
}

void check_data_file(Inspection& inspection) {
  bool by_bit = (inspection.incompatible_features & kQcow2ExternalDataFileBit) != 0;
  if (!by_bit && inspection.data_file.empty()) return;
  std::string name = inspection.data_file.empty() ? std::string("(not named)")
                                                  : quoted_name(inspection.data_file);
  inspection.refusals.push_back({"qcow2_data_file",
                                 "it is a qcow2 with external data file " + name +
                                     ", which qemu would open from the host",
                                 ErrorCode::kImageUnsafe});
}

std::uint64_t divide_rounding_up(std::uint64_t dividend, std::uint64_t divisor) {
  return dividend / divisor + (dividend % divisor != 0 ? 1 : 0);
}

void check_tables(const Sample& sample, const Qcow2Header& header, Inspection& inspection) {
  const std::string& head = sample.head;
  std::uint64_t cluster = header.cluster_size;
  std::uint64_t l2_entry_size = (inspection.incompatible_features & kQcow2ExtendedL2Bit) ? 16 : 8;
  std::uint64_t bytes_per_l1_entry = cluster * (cluster / l2_entry_size);
  std::uint64_t l1_entries = load_big_32(head, kQcow2L1Size);
  std::uint64_t l1_offset = load_big_64(head, kQcow2L1TableOffset);
  if (l1_entries > kQcow2MaximumL1Entries ||
      l1_entries < divide_rounding_up(inspection.virtual_size, bytes_per_l1_entry)) {
    refuse_malformed("qcow2_l1_size",
                     "its qcow2 l1_size of " + std::to_string(l1_entries) +
                         " entries does not fit its virtual size of " +
                         bytes_phrase(inspection.virtual_size) + " or is above qemu's limit");
  }
  if (l1_entries != 0 &&
      (l1_offset % cluster != 0 || !fits_within(l1_offset, l1_entries * 8, sample.size))) {
    refuse_malformed("qcow2_l1_table",
                     "its qcow2 L1 table is not cluster aligned or lies past the end of the image");
  }
  std::uint64_t refcount_offset = load_big_64(head, kQcow2RefcountTableOffset);
  std::uint64_t refcount_bytes = load_big_32(head, kQcow2RefcountTableClusters) * cluster;
  if (refcount_bytes == 0 || refcount_bytes > kQcow2MaximumRefcountTableBytes ||
      refcount_offset % cluster != 0 || !fits_within(refcount_offset, refcount_bytes, sample.size)) {
    refuse_malformed("qcow2_refcount_table",
                     "its qcow2 refcount table is empty, too large, not cluster aligned or lies "
                     "past the end of the image");
  }
  std::uint32_t snapshots = load_big_32(head, kQcow2SnapshotCount);
  std::uint64_t snapshots_offset = load_big_64(head, kQcow2SnapshotsOffset);
  if (snapshots > kQcow2MaximumSnapshots ||
      (snapshots != 0 && (snapshots_offset % cluster != 0 || snapshots_offset >= sample.size))) {
    refuse_malformed("qcow2_snapshot_table",
                     "its qcow2 snapshot table is too large, not cluster aligned or lies past "
                     "the end of the image");
  }
}

}  // namespace

bool looks_like_qcow2(const Sample& sample) { return has_bytes_at(sample.head, 0, kQcow2Magic); }

void parse_qcow2(Reader& reader, const Sample& sample, const InspectorPolicy&,
                 Inspection& inspection) {
  inspection.format = "qcow2";
  Qcow2Header header = read_fixed_header(sample, inspection);
  if (header.version == 3) read_version3_fields(sample, header, inspection);
  check_features(sample, inspection);
  check_backing_file(reader, sample, header, inspection);
  read_header_extensions(sample, header, inspection);
  check_data_file(inspection);
  check_tables(sample, header, inspection);
}

bool looks_like_qed(const Sample& sample) { return has_bytes_at(sample.head, 0, kQedMagic); }

void parse_qed(Reader& reader, const Sample& sample, const InspectorPolicy&,
               Inspection& inspection) {
  inspection.format = "qed";
  inspection.refusals.push_back({"qed_format",
                                 "it is a QED image, a format kiln never accepts (as Nova, "
                                 "following qemu's deprecation)",
                                 ErrorCode::kImageUnsafe});
  if (sample.head.size() < kQedHeaderLength) {
    refuse_malformed("qed_truncated", "its QED header is cut short at " +
                                          bytes_phrase(sample.head.size()));
  }
  inspection.cluster_size = load_little_32(sample.head, kQedClusterSize);
  inspection.virtual_size = load_little_64(sample.head, kQedImageSize);
  if ((load_little_64(sample.head, kQedFeatures) & kQedBackingFileBit) == 0) return;
  std::uint32_t offset = load_little_32(sample.head, kQedBackingFileOffset);
  std::uint32_t length = load_little_32(sample.head, kQedBackingFileSize);
  if (length > kQedMaximumBackingFileSize) {
    refuse_malformed("qed_backing_file_name", "its QED backing file name is longer than 1023 bytes");
  }
  inspection.backing_file =
      reader.read_exact(offset, length, "qed_backing_file_name", "its QED backing file name");
}

}  // namespace kiln::image::detail
