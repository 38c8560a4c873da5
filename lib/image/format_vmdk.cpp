// vmdk: the binary sparse extent header (VMware "Virtual Disk Format 5.0",
// qemu block/vmdk.c's VMDK4Header) with its embedded text descriptor, and
// text descriptor files on their own. The descriptor says where the data
// lives; kiln accepts only images whose one extent is the file itself.
#include <algorithm>
#include <charconv>

#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::string_view kSparseMagic{"KDMV", 4};
constexpr std::string_view kDescriptorFileBanner{"# Disk DescriptorFile"};

// Sparse extent header fields (byte offsets, little-endian; sizes in sectors).
constexpr std::size_t kVersion = 4;
constexpr std::size_t kCapacity = 12;
constexpr std::size_t kGrainSize = 20;
constexpr std::size_t kDescriptorOffset = 28;
constexpr std::size_t kDescriptorSize = 36;
constexpr std::size_t kGrainTableEntries = 44;
constexpr std::size_t kGrainDirectoryOffset = 56;
constexpr std::size_t kSparseHeaderLength = 79;  // through compressAlgorithm

constexpr std::uint32_t kMaximumVersion = 3;
constexpr std::uint64_t kMaximumGrainSectors = 0x200000;  // qemu: 1 GiB grains
constexpr std::uint32_t kMaximumGrainTableEntries = 512;   // qemu's limit
// Oslo's and Glance's cap on a descriptor.
constexpr std::uint64_t kMaximumDescriptorBytes = 1024 * 1024 - 1;
// The grain directory is in the footer (streamOptimized written by VMware).
constexpr std::uint64_t kGrainDirectoryAtEnd = ~std::uint64_t{0};

// The last 1536 bytes of a streamOptimized image whose directory is at the
// end: a footer marker, a copy of the header, an end-of-stream marker.
constexpr std::size_t kFooterMarker = 0;
constexpr std::size_t kFooterHeader = 512;
constexpr std::size_t kEndOfStreamMarker = 1024;
constexpr std::size_t kMarkerSize = 8;   // u64 value, then u32 size, u32 type
constexpr std::size_t kMarkerType = 12;
constexpr std::uint32_t kMarkerFooter = 3;
constexpr std::uint32_t kMarkerEndOfStream = 0;

struct Descriptor {
  std::string create_type;
  std::string parent_file_name;
  std::vector<VmdkExtent> extents;
  std::size_t extent_count = 0;
  std::uint64_t extent_sectors = 0;
};

std::string_view trim(std::string_view text) {
  auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

std::string_view unquote(std::string_view value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    return value.substr(1, value.size() - 2);
  }
  return value;
}

// The next space-separated word of `line`, removed from it.
std::string_view take_word(std::string_view& line) {
  line = trim(line);
  auto end = line.find_first_of(" \t");
  std::string_view word = line.substr(0, end);
  line = end == std::string_view::npos ? std::string_view{} : line.substr(end);
  return word;
}

bool is_extent_line(std::string_view line) {
  return line.starts_with("RW ") || line.starts_with("RDONLY ") || line.starts_with("NOACCESS ");
}

// "RW 20480 SPARSE "disk.vmdk" [offset]"; ZERO extents name no file.
VmdkExtent parse_extent(std::string_view line) {
  VmdkExtent extent;
  extent.access = take_word(line);
  std::string_view sectors = take_word(line);
  auto [end, error] =
      std::from_chars(sectors.data(), sectors.data() + sectors.size(), extent.sectors);
  if (error != std::errc{} || end != sectors.data() + sectors.size() ||
      extent.sectors > ~std::uint64_t{0} / kSectorSize) {
    refuse_malformed("vmdk_descriptor", "a vmdk extent line has a bad sector count " +
                                            quoted_name(sectors));
  }
  extent.type = take_word(line);
  line = trim(line);
  if (line.starts_with('"')) {
    auto closing = line.find('"', 1);
    if (closing == std::string_view::npos) {
      refuse_malformed("vmdk_descriptor", "a vmdk extent file name has no closing quote");
    }
    extent.file_name = line.substr(1, closing - 1);
  }
  return extent;
}

void add_extent(std::string_view line, Descriptor& descriptor) {
  VmdkExtent extent = parse_extent(line);
  descriptor.extent_count++;
  if (extent.sectors > ~std::uint64_t{0} / kSectorSize - descriptor.extent_sectors) {
    refuse_malformed("vmdk_descriptor", "the vmdk extents add up to more sectors than fit");
  }
  descriptor.extent_sectors += extent.sectors;
  if (descriptor.extents.size() < kMaxVmdkExtents) descriptor.extents.push_back(std::move(extent));
}

// Comments, "key=value" headers, ddb.* entries and extent lines.
Descriptor parse_descriptor(std::string_view text) {
  Descriptor descriptor;
  while (!text.empty()) {
    auto newline = text.find('\n');
    std::string_view line = trim(text.substr(0, newline));
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    if (line.empty() || line.starts_with('#')) continue;
    if (is_extent_line(line)) {
      add_extent(line, descriptor);
      continue;
    }
    auto equals = line.find('=');
    if (equals == std::string_view::npos) continue;
    std::string_view key = trim(line.substr(0, equals));
    std::string_view value = unquote(trim(line.substr(equals + 1)));
    if (key == "createType") descriptor.create_type = value;
    if (key == "parentFileNameHint") descriptor.parent_file_name = value;
  }
  return descriptor;
}

// The descriptor text ends at its first NUL: the rest of its sectors are padding.
std::string_view until_nul(std::string_view bytes) { return bytes.substr(0, bytes.find('\0')); }

// qemu's probe: after comments and blank lines, a "version=N" line. qemu-img
// writes the "# Disk DescriptorFile" banner first.
bool looks_like_descriptor_file(std::string_view head) {
  if (head.starts_with(kDescriptorFileBanner)) return true;
  std::string_view text = head;
  while (!text.empty()) {
    auto newline = text.find('\n');
    if (newline == std::string_view::npos) return false;
    std::string_view line = trim(text.substr(0, newline));
    text = text.substr(newline + 1);
    if (line.empty() || line.starts_with('#')) continue;
    return line == "version=1" || line == "version=2" || line == "version=3";
  }
  return false;
}

// The sparse header in force: the one at 0, or its copy in the footer when
// the grain directory is at the end of a stream.
std::string_view sparse_header(const Sample& sample) {
  if (load_little_64(sample.head, kGrainDirectoryOffset) != kGrainDirectoryAtEnd) {
    return sample.head;
  }
  std::string_view tail = sample.tail;
  bool footer_valid = tail.size() == kTailBytes && sample.size >= kTailBytes + kSectorSize &&
                      load_little_64(tail, kFooterMarker) == 0 &&
                      load_little_32(tail, kFooterMarker + kMarkerSize) == 0 &&
                      load_little_32(tail, kFooterMarker + kMarkerType) == kMarkerFooter &&
                      has_bytes_at(tail, kFooterHeader, kSparseMagic) &&
                      load_little_64(tail, kEndOfStreamMarker) == 0 &&
                      load_little_32(tail, kEndOfStreamMarker + kMarkerSize) == 0 &&
                      load_little_32(tail, kEndOfStreamMarker + kMarkerType) == kMarkerEndOfStream;
  if (!footer_valid) {
    refuse_malformed("vmdk_footer", "its vmdk header points at a footer that is missing or invalid");
  }
  return tail.substr(kFooterHeader);
}

void read_sparse_geometry(const Sample& sample, Inspection& inspection) {
  if (sample.head.size() < kSparseHeaderLength) {
    refuse_malformed("vmdk_truncated", "its vmdk header is cut short at " +
                                           bytes_phrase(sample.head.size()));
  }
  std::string_view header = sparse_header(sample);
  inspection.version = load_little_32(header, kVersion);
  if (inspection.version == 0 || inspection.version > kMaximumVersion) {
    refuse_malformed("vmdk_version", "it claims vmdk version " +
                                         std::to_string(inspection.version) +
                                         "; only versions 1 to 3 exist");
  }
  std::uint64_t capacity = load_little_64(header, kCapacity);
  std::uint64_t grain = load_little_64(header, kGrainSize);
  std::uint32_t grain_table_entries = load_little_32(header, kGrainTableEntries);
  if (capacity > ~std::uint64_t{0} / kSectorSize || grain == 0 || grain > kMaximumGrainSectors ||
      grain_table_entries == 0 || grain_table_entries > kMaximumGrainTableEntries) {
    refuse_malformed("vmdk_geometry",
                     "its vmdk capacity, grain size or grain table size is out of range");
  }
  inspection.virtual_size = capacity * kSectorSize;
  inspection.cluster_size = grain * kSectorSize;
  std::uint64_t directory = load_little_64(header, kGrainDirectoryOffset);
  if (directory > ~std::uint64_t{0} / kSectorSize || directory * kSectorSize >= sample.size) {
    refuse_malformed("vmdk_grain_directory",
                     "its vmdk grain directory lies past the end of the image");
  }
}

std::string read_embedded_descriptor(Reader& reader, const Sample& sample) {
  std::uint64_t offset = load_little_64(sample.head, kDescriptorOffset);
  std::uint64_t sectors = load_little_64(sample.head, kDescriptorSize);
  if (offset == 0) return {};
  if (sectors > kMaximumDescriptorBytes / kSectorSize || offset > ~std::uint64_t{0} / kSectorSize) {
    refuse_malformed("vmdk_descriptor", "its vmdk descriptor is larger than 1 MiB or misplaced");
  }
  return reader.read_exact(offset * kSectorSize, static_cast<std::size_t>(sectors * kSectorSize),
                           "vmdk_descriptor", "its vmdk descriptor");
}

bool names_a_path(std::string_view file_name) {
  return file_name.find('/') != std::string_view::npos ||
         file_name.find('\\') != std::string_view::npos;
}

void check_create_type(const InspectorPolicy& policy, const Descriptor& descriptor,
                       Inspection& inspection) {
  const auto& allowed = policy.vmdk_allowed_create_types;
  if (std::find(allowed.begin(), allowed.end(), descriptor.create_type) != allowed.end()) return;
  std::string type = descriptor.create_type.empty() ? std::string("(none)")
                                                    : quoted_name(descriptor.create_type);
  inspection.refusals.push_back({"vmdk_create_type",
                                 "its vmdk create type " + type +
                                     " is not in the allowed list; such images keep their data "
                                     "in other files",
                                 ErrorCode::kImageUnsafe});
}

// `self_contained`: the descriptor is embedded in a sparse extent, whose
// single extent line names that file itself; a descriptor file's extents
// always name other files.
void check_descriptor(const InspectorPolicy& policy, const Descriptor& descriptor,
                      bool self_contained, Inspection& inspection) {
  check_create_type(policy, descriptor, inspection);
  if (descriptor.extent_count == 0) {
    refuse_malformed("vmdk_no_extent", "its vmdk descriptor lists no extent");
  }
  if (descriptor.extent_count > 1) {
    inspection.refusals.push_back({"vmdk_multiple_extents",
                                   "its vmdk descriptor lists " +
                                       std::to_string(descriptor.extent_count) +
                                       " extents; only single-extent images are accepted",
                                   ErrorCode::kImageUnsafe});
  }
  for (const auto& extent : descriptor.extents) {
    if (extent.file_name.empty() || (self_contained && !names_a_path(extent.file_name))) continue;
    inspection.refusals.push_back({"vmdk_extent_path",
                                   "its vmdk extent names file " + quoted_name(extent.file_name) +
                                       ", which qemu would open from the host",
                                   ErrorCode::kImageUnsafe});
    break;
  }
  if (!descriptor.parent_file_name.empty()) {
    inspection.backing_file = descriptor.parent_file_name;
    inspection.refusals.push_back({"vmdk_backing_file",
                                   "it is a vmdk delta of parent " +
                                       quoted_name(descriptor.parent_file_name) +
                                       ", which qemu would open from the host",
                                   ErrorCode::kImageUnsafe});
  }
}

void keep_descriptor(const Descriptor& descriptor, Inspection& inspection) {
  inspection.vmdk_create_type = descriptor.create_type;
  inspection.vmdk_extents = descriptor.extents;
}

}  // namespace

bool looks_like_vmdk(const Sample& sample) {
  return has_bytes_at(sample.head, 0, kSparseMagic) || looks_like_descriptor_file(sample.head);
}

void parse_vmdk(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                Inspection& inspection) {
  inspection.format = "vmdk";
  if (!has_bytes_at(sample.head, 0, kSparseMagic)) {
    Descriptor descriptor = parse_descriptor(until_nul(sample.head));
    inspection.virtual_size = descriptor.extent_sectors * kSectorSize;
    keep_descriptor(descriptor, inspection);
    check_descriptor(policy, descriptor, false, inspection);
    return;
  }
  read_sparse_geometry(sample, inspection);
  std::string text = read_embedded_descriptor(reader, sample);
  Descriptor descriptor = parse_descriptor(until_nul(text));
  if (text.empty()) {
    inspection.refusals.push_back({"vmdk_create_type",
                                   "its vmdk has no descriptor, so its create type is unknown",
                                   ErrorCode::kImageUnsafe});
    return;
  }
  keep_descriptor(descriptor, inspection);
  check_descriptor(policy, descriptor, true, inspection);
}

}  // namespace kiln::image::detail
