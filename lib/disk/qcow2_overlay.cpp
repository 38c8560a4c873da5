#include "kiln/disk/qcow2_overlay.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"

namespace kiln::disk {

namespace fs = std::filesystem;

namespace {

// Field values, from qemu's docs/interop/qcow2.txt; the choices are
// qemu-img 7.2's defaults, so that both writers make the same image.
constexpr std::uint32_t kQcowMagic = 0x514649fb;  // "QFI\xfb"
constexpr std::uint32_t kFormatVersion = 3;       // qemu-img's compat=1.1
constexpr std::uint32_t kClusterBits = 16;        // 64 KiB clusters
constexpr std::uint64_t kClusterSize = 1ULL << kClusterBits;
constexpr std::uint32_t kRefcountOrder = 4;  // 16-bit refcounts
constexpr std::uint64_t kRefcountBits = 1ULL << kRefcountOrder;
constexpr std::uint32_t kNoEncryption = 0;
constexpr std::uint8_t kCompressionZlib = 0;
// Through compression_type (byte 104), padded to a multiple of 8: what
// qemu 7.2 writes. Every field not set below stays zero: no snapshots, no
// feature bits, no encryption.
constexpr std::uint32_t kHeaderLength = 112;

// Byte positions of the header fields (qcow2.txt, "Header").
namespace header_field {
constexpr std::size_t kMagic = 0;                   // u32
constexpr std::size_t kVersion = 4;                 // u32
constexpr std::size_t kBackingFileOffset = 8;       // u64
constexpr std::size_t kBackingFileSize = 16;        // u32
constexpr std::size_t kClusterBits = 20;            // u32
constexpr std::size_t kSize = 24;                   // u64
constexpr std::size_t kCryptMethod = 32;            // u32
constexpr std::size_t kL1Size = 36;                 // u32
constexpr std::size_t kL1TableOffset = 40;          // u64
constexpr std::size_t kRefcountTableOffset = 48;    // u64
constexpr std::size_t kRefcountTableClusters = 56;  // u32
constexpr std::size_t kRefcountOrder = 96;          // u32
constexpr std::size_t kHeaderLength = 100;          // u32
constexpr std::size_t kCompressionType = 104;       // u8
}  // namespace header_field

// Header extensions (qcow2.txt, "Header extensions"): a u32 type, a u32
// length, the data, zero padding to a multiple of 8.
constexpr std::uint32_t kExtensionEnd = 0x00000000;
constexpr std::uint32_t kExtensionBackingFormat = 0xe2792aca;
constexpr std::uint32_t kExtensionFeatureNameTable = 0x6803f857;
constexpr std::size_t kExtensionAlignment = 8;
constexpr std::string_view kBackingFormatRaw = "raw";

// Feature name table entries (qcow2.txt, "Feature name table"): a type byte,
// a bit number byte and a zero-padded 46-byte name.
constexpr std::size_t kFeatureNameEntryBytes = 48;
constexpr std::size_t kFeatureNameBytes = 46;
enum class FeatureType : std::uint8_t { kIncompatible = 0, kCompatible = 1, kAutoclear = 2 };
struct FeatureName {
  FeatureType type;
  std::uint8_t bit;
  std::string_view name;
};
// Exactly the table qemu 7.2 writes, in its order. The image uses none of
// these features; the names only let older tools explain newer images.
constexpr FeatureName kFeatureNames[] = {
    {FeatureType::kIncompatible, 0, "dirty bit"},
    {FeatureType::kIncompatible, 1, "corrupt bit"},
    {FeatureType::kIncompatible, 2, "external data file"},
    {FeatureType::kIncompatible, 3, "compression type"},
    {FeatureType::kIncompatible, 4, "extended L2 entries"},
    {FeatureType::kCompatible, 0, "lazy refcounts"},
    {FeatureType::kAutoclear, 0, "bitmaps"},
    {FeatureType::kAutoclear, 1, "raw external data"},
};
static_assert(std::ranges::all_of(kFeatureNames, [](const FeatureName& feature) {
  return feature.name.size() <= kFeatureNameBytes;
}));

// Tables. An L2 table fills one cluster of 8-byte entries, so one L1 entry
// maps cluster_size * cluster_size / 8 bytes of the disk (512 MiB).
constexpr std::uint64_t kTableEntryBytes = 8;  // L1, L2 and refcount table entries
constexpr std::uint64_t kBytesPerL1Entry = kClusterSize * (kClusterSize / kTableEntryBytes);
constexpr std::uint64_t kRefcountBytes = kRefcountBits / 8;
constexpr std::uint64_t kRefcountsPerBlock = kClusterSize / kRefcountBytes;
constexpr std::uint16_t kRefcountInUse = 1;
constexpr std::uint32_t kRefcountTableClusters = 1;  // 8192 block pointers: far more than needed

// Clusters in the order qemu-img allocates them after the header (cluster
// 0); the L1 table runs from kL1TableFirstCluster to the end of the file.
constexpr std::uint64_t kRefcountTableCluster = 1;
constexpr std::uint64_t kRefcountBlockCluster = 2;
constexpr std::uint64_t kL1TableFirstCluster = 3;

constexpr std::uint64_t kSectorSize = 512;

constexpr std::uint64_t divide_rounding_up(std::uint64_t value, std::uint64_t divisor) {
  return value / divisor + (value % divisor != 0);
}

constexpr std::uint64_t l1_entries_for(std::uint64_t virtual_size) {
  return divide_rounding_up(virtual_size, kBytesPerL1Entry);
}

constexpr std::uint64_t l1_clusters_for(std::uint64_t l1_entries) {
  return divide_rounding_up(l1_entries * kTableEntryBytes, kClusterSize);
}

// The whole layout rests on these: one refcount block counts every cluster
// of the largest overlay (2 PiB: 3 + 512 clusters of 32768), and l1_size fits
// its u32 header field.
static_assert(kL1TableFirstCluster + l1_clusters_for(l1_entries_for(kMaxOverlayVirtualSize)) <=
              kRefcountsPerBlock);
static_assert(l1_entries_for(kMaxOverlayVirtualSize) <= UINT32_MAX);
static_assert(kMaxOverlayVirtualSize % kSectorSize == 0);

// Bytes under construction with integers stored big-endian: the one place
// where this writer turns numbers into qcow2's byte order.
class BigEndianBuffer {
 public:
  explicit BigEndianBuffer(std::size_t size) : bytes_(size, '\0') {}

  void put8(std::size_t offset, std::uint8_t value) { put(offset, value, 1); }
  void put16(std::size_t offset, std::uint16_t value) { put(offset, value, 2); }
  void put32(std::size_t offset, std::uint32_t value) { put(offset, value, 4); }
  void put64(std::size_t offset, std::uint64_t value) { put(offset, value, 8); }

  void put_text(std::size_t offset, std::string_view text) {
    if (offset + text.size() > bytes_.size()) throw std::out_of_range("BigEndianBuffer::put_text");
    std::copy(text.begin(), text.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
  }

  void append(std::string_view text) { bytes_.insert(bytes_.end(), text.begin(), text.end()); }
  void append32(std::uint32_t value) {
    bytes_.resize(bytes_.size() + 4);
    put32(bytes_.size() - 4, value);
  }
  void pad_to_multiple_of(std::size_t alignment) {
    bytes_.resize(divide_rounding_up(bytes_.size(), alignment) * alignment, '\0');
  }

  std::size_t size() const { return bytes_.size(); }
  std::span<const char> bytes() const { return bytes_; }
  std::string_view view() const { return {bytes_.data(), bytes_.size()}; }

 private:
  void put(std::size_t offset, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) {
      bytes_.at(offset + i) = static_cast<char>(value >> (8 * (width - 1 - i)));
    }
  }

  std::vector<char> bytes_;
};

void put_header_fields(BigEndianBuffer& header, const Qcow2OverlayLayout& layout) {
  header.put32(header_field::kMagic, kQcowMagic);
  header.put32(header_field::kVersion, kFormatVersion);
  header.put32(header_field::kClusterBits, kClusterBits);
  header.put64(header_field::kSize, layout.virtual_size);
  header.put32(header_field::kCryptMethod, kNoEncryption);
  header.put32(header_field::kL1Size, layout.l1_entries);
  header.put64(header_field::kL1TableOffset, layout.l1_table_offset);
  header.put64(header_field::kRefcountTableOffset, layout.refcount_table_offset);
  header.put32(header_field::kRefcountTableClusters, kRefcountTableClusters);
  header.put32(header_field::kRefcountOrder, kRefcountOrder);
  header.put32(header_field::kHeaderLength, kHeaderLength);
  header.put8(header_field::kCompressionType, kCompressionZlib);
}

void append_extension(BigEndianBuffer& header, std::uint32_t type, std::string_view data) {
  header.append32(type);
  header.append32(static_cast<std::uint32_t>(data.size()));
  header.append(data);
  header.pad_to_multiple_of(kExtensionAlignment);
}

BigEndianBuffer feature_name_table() {
  BigEndianBuffer table(std::size(kFeatureNames) * kFeatureNameEntryBytes);
  std::size_t offset = 0;
  for (const FeatureName& feature : kFeatureNames) {
    table.put8(offset, static_cast<std::uint8_t>(feature.type));
    table.put8(offset + 1, feature.bit);
    table.put_text(offset + 2, feature.name);  // the rest of the 46 bytes stays zero
    offset += kFeatureNameEntryBytes;
  }
  return table;
}

// The first cluster up to the end of the backing file name; the rest of the
// cluster is zero.
BigEndianBuffer header_cluster(const Qcow2OverlayLayout& layout, std::string_view backing_name) {
  BigEndianBuffer header(kHeaderLength);
  put_header_fields(header, layout);
  append_extension(header, kExtensionBackingFormat, kBackingFormatRaw);
  append_extension(header, kExtensionFeatureNameTable, feature_name_table().view());
  append_extension(header, kExtensionEnd, {});
  header.put64(header_field::kBackingFileOffset, header.size());
  header.put32(header_field::kBackingFileSize, static_cast<std::uint32_t>(backing_name.size()));
  header.append(backing_name);
  return header;
}

// The refcount table's only entry in use: the one refcount block.
BigEndianBuffer refcount_table(const Qcow2OverlayLayout& layout) {
  BigEndianBuffer table(kTableEntryBytes);
  table.put64(0, layout.refcount_block_offset);
  return table;
}

// Refcount 1 for each cluster in use, 0 (absent) for all after them.
BigEndianBuffer refcount_block(const Qcow2OverlayLayout& layout) {
  BigEndianBuffer block(layout.clusters_in_use * kRefcountBytes);
  for (std::uint64_t cluster = 0; cluster < layout.clusters_in_use; ++cluster) {
    block.put16(cluster * kRefcountBytes, kRefcountInUse);
  }
  return block;
}

void write_at(int fd, std::uint64_t offset, std::span<const char> data, const fs::path& path) {
  while (!data.empty()) {
    ssize_t written = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot write " + path.string(), errno);
    }
    data = data.subspan(static_cast<std::size_t>(written));
    offset += static_cast<std::uint64_t>(written);
  }
}

void write_metadata(int fd, const Qcow2OverlayLayout& layout, std::string_view backing_name,
                    const fs::path& path) {
  write_at(fd, 0, header_cluster(layout, backing_name).bytes(), path);
  write_at(fd, layout.refcount_table_offset, refcount_table(layout).bytes(), path);
  write_at(fd, layout.refcount_block_offset, refcount_block(layout).bytes(), path);
  // The L1 table is all zeros (nothing allocated yet): extending the file
  // over it leaves a hole that reads as zeros and costs no writes.
  if (::ftruncate(fd, static_cast<off_t>(layout.file_size)) != 0) {
    throw_io_error("cannot size " + path.string(), errno);
  }
}

void check_backing_name(const fs::path& backing) {
  const std::string& name = backing.native();
  if (!backing.is_absolute()) {
    throw Error(ErrorCode::kInvalidArgument, "backing file " + name + " is not absolute");
  }
  if (name.size() > kMaxBackingFileNameBytes) {
    throw Error(ErrorCode::kInvalidArgument, "backing file name is " + std::to_string(name.size()) +
                                                 " bytes long; qcow2 holds at most " +
                                                 std::to_string(kMaxBackingFileNameBytes));
  }
  if (name.find('\0') != std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument, "backing file name contains a NUL byte");
  }
}

void check_backing_exists(const fs::path& backing) {
  std::error_code error;
  fs::file_status status = fs::status(backing, error);
  if (!fs::exists(status)) {
    throw Error(ErrorCode::kNotFound, "backing file " + backing.string() + " does not exist");
  }
  if (fs::is_directory(status)) {
    throw Error(ErrorCode::kInvalidArgument,
                "backing file " + backing.string() + " is a directory");
  }
}

void check_requested_size(std::uint64_t requested_bytes) {
  if (requested_bytes == 0) {
    throw Error(ErrorCode::kInvalidArgument, "an overlay needs a virtual size above 0 bytes");
  }
  if (requested_bytes > kMaxOverlayVirtualSize) {
    throw Error(ErrorCode::kInvalidArgument,
                "virtual size " + std::to_string(requested_bytes) +
                    " is above the largest qcow2 overlay qemu can open (" +
                    std::to_string(kMaxOverlayVirtualSize) + " bytes, 2 PiB)");
  }
}

}  // namespace

std::uint64_t overlay_virtual_size(std::uint64_t requested_bytes) {
  check_requested_size(requested_bytes);
  return divide_rounding_up(requested_bytes, kSectorSize) * kSectorSize;
}

Qcow2OverlayLayout qcow2_overlay_layout(std::uint64_t requested_bytes) {
  Qcow2OverlayLayout layout;
  layout.virtual_size = overlay_virtual_size(requested_bytes);
  layout.cluster_size = kClusterSize;
  layout.refcount_table_offset = kRefcountTableCluster * kClusterSize;
  layout.refcount_block_offset = kRefcountBlockCluster * kClusterSize;
  layout.l1_table_offset = kL1TableFirstCluster * kClusterSize;
  layout.l1_entries = static_cast<std::uint32_t>(l1_entries_for(layout.virtual_size));
  layout.l1_table_clusters = l1_clusters_for(layout.l1_entries);
  layout.clusters_in_use = kL1TableFirstCluster + layout.l1_table_clusters;
  layout.file_size = layout.l1_table_offset + layout.l1_entries * kTableEntryBytes;
  return layout;
}

void check_overlay_request(const fs::path& backing, std::uint64_t requested_bytes) {
  check_backing_name(backing);
  check_requested_size(requested_bytes);
  check_backing_exists(backing);
}

void write_qcow2_overlay(const fs::path& overlay, const fs::path& backing,
                         std::uint64_t requested_bytes, Durability durability) {
  check_overlay_request(backing, requested_bytes);
  Qcow2OverlayLayout layout = qcow2_overlay_layout(requested_bytes);
  // O_EXCL: never over an existing file; the file, once created, is ours to
  // remove if anything below fails.
  UniqueFd fd = open_file(overlay, O_WRONLY | O_CREAT | O_EXCL, 0644);
  TemporaryPath unfinished(overlay);
  KILN_FAILPOINT("overlay.file_created");
  write_metadata(fd.get(), layout, backing.native(), overlay);
  if (durability == Durability::kSynced) fsync_file(fd.get(), overlay);
  unfinished.keep();
}

}  // namespace kiln::disk
