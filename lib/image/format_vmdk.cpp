// vmdk: the binary sparse extent header (VMware "Virtual Disk Format 5.0",
// qemu block/vmdk.c's VMDK4Header) with its embedded text descriptor, and
// text descriptor files on their own.
//
// The inspector reads a vmdk the way qemu 7.2 opens it, because qemu is what
// later follows the image's words:
// - A file that starts with neither "KDMV" nor "COWD" is a descriptor file
//   (with -f vmdk qemu needs no probe): its extents are other files, opened
//   next to the image or by absolute path. Always refused.
// - "COWD" (VMFS sparse, vmdk version 3 of old) is never accepted.
// - "KDMV" whose capacity is 0 and descriptor offset is not: qemu reads the
//   text at that offset as a descriptor file, with everything that implies.
//   Always refused.
// - Any other "KDMV": the one extent is the image itself. qemu reads neither
//   the extent lines nor createType (it takes the type from the header's
//   compression field), but it reads 10 KiB of text at offset 512, whatever
//   the header's descriptor offset says, and finds keys there as strstr()
//   does: the first occurrence counts, inside a "#" comment too.
//   "parentFileNameHint" anywhere in that text makes the image a delta of
//   another file.
// So the inspector keeps an allow-list: a sparse extent whose descriptor lies
// at sector 1, names createType once, equal to what qemu derives from the
// header and allowed by the policy, holds exactly one extent line
// `RW <capacity> SPARSE "<bare name>"`, says parentCID=ffffffff and does not
// contain "parentFileNameHint" at all. Descriptor text is searched raw,
// comments included, as qemu searches it.
#include <algorithm>
#include <cctype>
#include <optional>

#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

constexpr std::string_view kSparseMagic{"KDMV", 4};
constexpr std::string_view kVmfsSparseMagic{"COWD", 4};
constexpr std::string_view kDescriptorFileBanner{"# Disk DescriptorFile"};

// Sparse extent header fields (byte offsets, little-endian; sizes in sectors).
constexpr std::size_t kVersion = 4;
constexpr std::size_t kCapacity = 12;
constexpr std::size_t kGrainSize = 20;
constexpr std::size_t kDescriptorOffset = 28;
constexpr std::size_t kDescriptorSize = 36;
constexpr std::size_t kGrainTableEntries = 44;
constexpr std::size_t kGrainDirectoryOffset = 56;
constexpr std::size_t kCompressAlgorithm = 77;
constexpr std::size_t kSparseHeaderLength = 79;  // through compressAlgorithm

constexpr std::uint32_t kMaximumVersion = 3;
constexpr std::uint64_t kMaximumGrainSectors = 0x200000;  // qemu: 1 GiB grains
constexpr std::uint32_t kMaximumGrainTableEntries = 512;   // qemu's limit
constexpr std::uint16_t kCompressionDeflate = 1;
// Where every honest sparse extent keeps its descriptor, and where qemu reads
// it (for the parent hint and the CIDs) whatever the header says.
constexpr std::uint64_t kEmbeddedDescriptorSector = 1;
// How much text qemu searches for parentFileNameHint, CID and parentCID.
constexpr std::size_t kQemuDescriptorWindow = 20 * 512;
// qemu reads at most this much of a descriptor file; so do Oslo and Glance.
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

// qemu's sscanf field widths for an extent line: "%10s %lld %10s "%511[^\n\r"]" %lld".
constexpr std::size_t kQemuWordWidth = 10;
constexpr std::size_t kQemuFileNameWidth = 511;
// qemu's buffer for createType; a longer value fails its open.
constexpr std::size_t kQemuCreateTypeLimit = 127;

constexpr std::string_view kParentHintKey{"parentFileNameHint"};
constexpr std::string_view kParentCidKey{"parentCID"};
constexpr std::string_view kCreateTypeKey{"createType"};
constexpr std::string_view kNoParentCid{"ffffffff"};

// ----- reading descriptor text as qemu does -----

// C string functions stop at the first NUL: so does qemu's view of the text.
std::string_view until_nul(std::string_view bytes) { return bytes.substr(0, bytes.find('\0')); }

// sscanf's whitespace: a blank in its format skips any run of these, newlines too.
bool is_scanf_space(char character) {
  return character == ' ' || character == '\t' || character == '\n' || character == '\v' ||
         character == '\f' || character == '\r';
}

void skip_space(std::string_view& text) {
  while (!text.empty() && is_scanf_space(text.front())) text.remove_prefix(1);
}

// "%10s": after whitespace, up to `width` non-blank characters.
std::optional<std::string_view> scan_word(std::string_view& text, std::size_t width) {
  skip_space(text);
  std::size_t length = 0;
  while (length < text.size() && length < width && !is_scanf_space(text[length])) ++length;
  if (length == 0) return std::nullopt;
  std::string_view word = text.substr(0, length);
  text.remove_prefix(length);
  return word;
}

// "%lld": after whitespace, an optional sign and at least one digit. A value
// that does not fit is kept at the type's limit, as strtoll would.
std::optional<std::int64_t> scan_integer(std::string_view& text) {
  skip_space(text);
  std::size_t at = 0;
  bool negative = false;
  if (at < text.size() && (text[at] == '+' || text[at] == '-')) negative = text[at++] == '-';
  std::size_t digits_start = at;
  std::uint64_t magnitude = 0;
  bool overflow = false;
  for (; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); ++at) {
    auto digit = static_cast<std::uint64_t>(text[at] - '0');
    if (magnitude > (std::uint64_t{1} << 62) / 5) overflow = true;  // *10 would pass 2^63
    magnitude = overflow ? magnitude : magnitude * 10 + digit;
  }
  if (at == digits_start) return std::nullopt;
  text.remove_prefix(at);
  constexpr std::uint64_t kLimit = std::uint64_t{1} << 63;
  if (overflow || magnitude >= kLimit) magnitude = kLimit - 1;
  auto value = static_cast<std::int64_t>(magnitude);
  return negative ? -value : value;
}

// One extent as qemu's sscanf of a line reads it; `fields` is sscanf's count.
struct ScannedExtent {
  int fields = 0;
  VmdkExtent extent;
  std::int64_t sectors = 0;
  bool flat_offset = false;  // a fifth field after the file name
  bool one_line = false;     // through the file name's closing quote, on its first line
};

// `text` starts at a line and runs to the end of the descriptor: like
// sscanf, the scan crosses line ends wherever its format has a blank.
ScannedExtent scan_extent(std::string_view text) {
  const std::string_view line_start = text;
  ScannedExtent scanned;
  auto access = scan_word(text, kQemuWordWidth);
  if (!access) return scanned;
  scanned.extent.access = *access;
  scanned.fields = 1;
  auto sectors = scan_integer(text);
  if (!sectors) return scanned;
  scanned.sectors = *sectors;
  scanned.extent.sectors = *sectors > 0 ? static_cast<std::uint64_t>(*sectors) : 0;
  scanned.fields = 2;
  auto type = scan_word(text, kQemuWordWidth);
  if (!type) return scanned;
  scanned.extent.type = *type;
  scanned.fields = 3;
  skip_space(text);
  if (text.empty() || text.front() != '"') return scanned;
  text.remove_prefix(1);
  std::size_t length = 0;
  while (length < text.size() && length < kQemuFileNameWidth && text[length] != '\n' &&
         text[length] != '\r' && text[length] != '"') {
    ++length;
  }
  if (length == 0) return scanned;
  scanned.extent.file_name = text.substr(0, length);
  scanned.fields = 4;
  text.remove_prefix(length);
  if (text.empty() || text.front() != '"') return scanned;
  text.remove_prefix(1);
  std::string_view through_name = line_start.substr(0, line_start.size() - text.size());
  scanned.one_line = through_name.find('\n') == std::string_view::npos;
  scanned.flat_offset = scan_integer(text).has_value();
  if (scanned.flat_offset) scanned.fields = 5;
  return scanned;
}

// The extents qemu adds when it reads a descriptor file; it skips the rest
// (RDONLY, NOACCESS and ZERO lines among them).
bool qemu_opens(const ScannedExtent& scanned) {
  const std::string& type = scanned.extent.type;
  bool known = type == "FLAT" || type == "SPARSE" || type == "VMFS" || type == "VMFSSPARSE" ||
               type == "SESPARSE";
  return scanned.fields >= 4 && scanned.extent.access == "RW" && known && scanned.sectors > 0;
}

bool is_access_word(std::string_view word) {
  return word == "RW" || word == "RDONLY" || word == "NOACCESS";
}

// The extent lines of a descriptor: the first kMaxVmdkExtents kept, all counted.
struct ExtentLines {
  std::vector<ScannedExtent> kept;
  std::size_t count = 0;
  std::uint64_t sectors = 0;  // of those qemu opens, held at the largest byte count that fits
};

// Every line qemu (or another tool) could take for an extent: qemu tries
// sscanf at each line start and opens what it reads there. A blank line is
// skipped so that the extent after it is not counted twice.
ExtentLines scan_extent_lines(std::string_view text) {
  ExtentLines lines;
  for (std::size_t line = 0; line < text.size();) {
    std::size_t end = text.find('\n', line);
    std::string_view rest = text.substr(line);
    std::string_view own_line = text.substr(line, end == std::string_view::npos ? end : end - line);
    bool blank = std::all_of(own_line.begin(), own_line.end(), is_scanf_space);
    if (!blank) {
      ScannedExtent scanned = scan_extent(rest);
      if (scanned.fields >= 1 && is_access_word(scanned.extent.access)) {
        ++lines.count;
        std::uint64_t room = ~std::uint64_t{0} / kSectorSize - lines.sectors;
        if (qemu_opens(scanned)) lines.sectors += std::min(scanned.extent.sectors, room);
        if (lines.kept.size() < kMaxVmdkExtents) lines.kept.push_back(std::move(scanned));
      }
    }
    if (end == std::string_view::npos) break;
    line = end + 1;
  }
  return lines;
}

// qemu's vmdk_parse_description: the first occurrence of `key` anywhere,
// then two characters skipped (`="` in an honest line), then up to the next
// quote. nullopt when the key is missing or the value has no closing quote.
std::optional<std::string_view> qemu_quoted_value(std::string_view text, std::string_view key) {
  auto at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t start = at + key.size() + 2;
  if (start >= text.size()) return std::nullopt;
  auto end = text.find('"', start);
  if (end == std::string_view::npos) return std::nullopt;
  return text.substr(start, end - start);
}

std::size_t count_occurrences(std::string_view text, std::string_view key) {
  std::size_t count = 0;
  for (auto at = text.find(key); at != std::string_view::npos; at = text.find(key, at + 1)) {
    ++count;
  }
  return count;
}

bool names_a_path(std::string_view file_name) {
  return file_name.find('/') != std::string_view::npos ||
         file_name.find('\\') != std::string_view::npos;
}

// ----- what every kind of vmdk reports -----

void keep_extents(const ExtentLines& lines, Inspection& inspection) {
  inspection.vmdk_extents.clear();
  for (const auto& extent : lines.kept) inspection.vmdk_extents.push_back(extent.extent);
}

// The parent qemu would open: "parentFileNameHint" anywhere in `text`, its
// value read as qemu reads it (20 characters after the key's start, up to a quote).
void check_parent_hint(std::string_view text, Inspection& inspection) {
  auto at = text.find(kParentHintKey);
  if (at == std::string_view::npos) return;
  std::string_view rest = text.substr(std::min(text.size(), at + kParentHintKey.size() + 2));
  std::string_view name = rest.substr(0, rest.find('"'));
  inspection.backing_file = name;
  inspection.refusals.push_back({"vmdk_backing_file",
                                 "its vmdk descriptor names parent " + quoted_name(name) +
                                     " (parentFileNameHint, which qemu finds even in a comment), "
                                     "a file qemu would open from the host",
                                 ErrorCode::kImageUnsafe});
}

// Descriptor files and capacity-0 extents: qemu opens the extents they name.
// Refused outright; what qemu would open is reported.
void refuse_descriptor_file(std::string_view text, std::string rule, std::string sentence,
                            Inspection& inspection) {
  inspection.refusals.push_back({std::move(rule), std::move(sentence), ErrorCode::kImageUnsafe});
  if (auto type = qemu_quoted_value(text, kCreateTypeKey)) inspection.vmdk_create_type = *type;
  ExtentLines extents = scan_extent_lines(text);
  keep_extents(extents, inspection);
  for (const auto& extent : extents.kept) {
    if (extent.extent.file_name.empty() || inspection.refused_by("vmdk_extent_path")) continue;
    inspection.refusals.push_back({"vmdk_extent_path",
                                   "its vmdk extent names file " +
                                       quoted_name(extent.extent.file_name) +
                                       ", which qemu would open from the host",
                                   ErrorCode::kImageUnsafe});
  }
  inspection.virtual_size = extents.sectors * kSectorSize;
  check_parent_hint(text, inspection);
}

// qemu's probe: after comments and blank lines, a "version=N" line. qemu-img
// writes the "# Disk DescriptorFile" banner first. (With -f vmdk qemu takes
// any file without a sparse magic for a descriptor; such a file that this
// probe misses is "raw" here, which a Glance disk_format of vmdk refuses.)
bool looks_like_descriptor_file(std::string_view head) {
  if (head.starts_with(kDescriptorFileBanner)) return true;
  std::string_view text = head;
  while (!text.empty()) {
    auto newline = text.find('\n');
    if (newline == std::string_view::npos) return false;
    std::string_view line = text.substr(0, newline);
    text = text.substr(newline + 1);
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    line = line.substr(first);
    auto last = line.find_last_not_of(" \t\r");
    line = line.substr(0, last + 1);
    return line == "version=1" || line == "version=2" || line == "version=3";
  }
  return false;
}

// ----- sparse extents -----

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

// Returns the create type qemu derives from the header in force.
std::string read_sparse_geometry(const Sample& sample, Inspection& inspection) {
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
  if (capacity == 0) {
    // Only the header at 0 sends qemu down the descriptor-file path; a zero
    // disk is refused either way, as nobody needs one.
    refuse_malformed("vmdk_capacity", "its vmdk header declares a capacity of 0 sectors");
  }
  return load_little_16(header, kCompressAlgorithm) == kCompressionDeflate ? "streamOptimized"
                                                                           : "monolithicSparse";
}

// The text at sector 1, where qemu reads the parent hint and the CIDs
// whatever the header says: its 10 KiB window, or the whole declared
// descriptor when that is longer and starts there.
std::string read_sector_one_text(Reader& reader, const Sample& sample) {
  std::uint64_t offset = load_little_64(sample.head, kDescriptorOffset);
  std::uint64_t sectors = load_little_64(sample.head, kDescriptorSize);
  if (sectors > kMaximumDescriptorBytes / kSectorSize) {
    refuse_malformed("vmdk_descriptor", "its vmdk descriptor is larger than 1 MiB");
  }
  std::uint64_t length = kQemuDescriptorWindow;
  if (offset == kEmbeddedDescriptorSector) length = std::max(length, sectors * kSectorSize);
  return reader.read_up_to(kEmbeddedDescriptorSector * kSectorSize,
                           static_cast<std::size_t>(length));
}

// The descriptor tools that trust the header read must be the one qemu reads.
bool check_descriptor_location(const Sample& sample, Inspection& inspection) {
  std::uint64_t offset = load_little_64(sample.head, kDescriptorOffset);
  std::uint64_t sectors = load_little_64(sample.head, kDescriptorSize);
  if (offset == kEmbeddedDescriptorSector && sectors != 0) return true;
  std::string where = offset == 0 || sectors == 0
                          ? std::string("it has no embedded descriptor")
                          : "its descriptor is said to be at sector " + std::to_string(offset);
  inspection.refusals.push_back({"vmdk_descriptor_offset",
                                 where + ", but qemu reads the descriptor at sector 1 whatever "
                                         "the header says, so tools would read different ones",
                                 ErrorCode::kImageUnsafe});
  return false;
}

void check_create_type(const InspectorPolicy& policy, std::string_view text,
                       const std::string& qemu_type, Inspection& inspection) {
  auto refuse = [&](const std::string& sentence) {
    inspection.refusals.push_back({"vmdk_create_type", sentence, ErrorCode::kImageUnsafe});
  };
  std::size_t mentions = count_occurrences(text, kCreateTypeKey);
  auto first = text.find(kCreateTypeKey);
  bool at_line_start = first != std::string_view::npos && (first == 0 || text[first - 1] == '\n');
  auto value = qemu_quoted_value(text, kCreateTypeKey);
  if (value) inspection.vmdk_create_type = *value;
  if (mentions != 1 || !at_line_start || !value ||
      !text.substr(first).starts_with("createType=\"") || value->size() > kQemuCreateTypeLimit) {
    refuse("its vmdk descriptor names createType " + std::to_string(mentions) +
           " times or outside a plain createType=\"...\" line, so tools that take the first, "
           "the last or a commented one disagree");
    return;
  }
  const auto& allowed = policy.vmdk_allowed_create_types;
  if (std::find(allowed.begin(), allowed.end(), *value) == allowed.end()) {
    refuse("its vmdk create type " + quoted_name(*value) +
           " is not in the allowed list; such images keep their data in other files");
  } else if (*value != qemu_type) {
    refuse("its vmdk descriptor says " + quoted_name(*value) +
           " but its header makes qemu read it as " + qemu_type);
  }
}

// parentCID as qemu reads it: strstr, one character skipped after the key, a hex number.
void check_parent_cid(std::string_view window, Inspection& inspection) {
  auto at = window.find(kParentCidKey);
  if (at == std::string_view::npos) {
    inspection.refusals.push_back({"vmdk_parent_cid",
                                   "its vmdk descriptor has no parentCID, without which qemu "
                                   "cannot open it",
                                   ErrorCode::kImageMalformed});
    return;
  }
  std::string_view rest = window.substr(at + kParentCidKey.size());
  std::string_view value = rest.substr(std::min<std::size_t>(1, rest.size()), kNoParentCid.size());
  std::string lowered(value);
  for (char& character : lowered) character = static_cast<char>(std::tolower(character));
  std::size_t after = 1 + kNoParentCid.size();
  bool ends = rest.size() <= after || !std::isxdigit(static_cast<unsigned char>(rest[after]));
  if (rest.starts_with('=') && lowered == kNoParentCid && ends) return;
  std::string_view shown = rest.substr(0, rest.find_first_of("\r\n"));
  inspection.refusals.push_back({"vmdk_parent_cid",
                                 "its vmdk descriptor's parentCID reads " +
                                     quoted_name(shown.substr(0, 20)) +
                                     " rather than =ffffffff: it is a delta of another disk",
                                 ErrorCode::kImageUnsafe});
}

// Exactly one extent line, `RW <capacity> SPARSE "<bare name>"`: the image itself.
void check_self_extent(std::string_view text, Inspection& inspection) {
  ExtentLines extents = scan_extent_lines(text);
  keep_extents(extents, inspection);
  if (extents.count == 0) refuse_malformed("vmdk_no_extent", "its vmdk descriptor lists no extent");
  if (extents.count > 1) {
    inspection.refusals.push_back({"vmdk_multiple_extents",
                                   "its vmdk descriptor lists " + std::to_string(extents.count) +
                                       " extents; only single-extent images are accepted",
                                   ErrorCode::kImageUnsafe});
    return;
  }
  const ScannedExtent& only = extents.kept.front();
  if (names_a_path(only.extent.file_name)) {
    inspection.refusals.push_back({"vmdk_extent_path",
                                   "its vmdk extent names file " +
                                       quoted_name(only.extent.file_name) +
                                       ", which qemu would open from the host",
                                   ErrorCode::kImageUnsafe});
    return;
  }
  bool canonical = only.fields == 4 && only.one_line && only.extent.access == "RW" &&
                   only.extent.type == "SPARSE" && only.sectors > 0 &&
                   only.extent.sectors == inspection.virtual_size / kSectorSize;
  if (!canonical) {
    inspection.refusals.push_back({"vmdk_extent",
                                   "its vmdk extent line is not RW <capacity> SPARSE \"<name>\" "
                                   "on one line, the one extent of a self-contained sparse image",
                                   ErrorCode::kImageUnsafe});
  }
}

void parse_sparse_extent(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                         Inspection& inspection) {
  if (sample.head.size() < kSparseHeaderLength) {
    refuse_malformed("vmdk_truncated", "its vmdk header is cut short at " +
                                           bytes_phrase(sample.head.size()));
  }
  std::string qemu_type = read_sparse_geometry(sample, inspection);
  std::string raw = read_sector_one_text(reader, sample);
  // qemu's view: its 10 KiB window up to the first NUL. The parent hint is
  // searched in all bytes read, past a NUL too: a stricter reading than qemu's.
  std::string_view window = until_nul(std::string_view(raw).substr(0, kQemuDescriptorWindow));
  std::string_view descriptor = until_nul(raw);
  check_parent_hint(raw, inspection);
  check_parent_cid(window, inspection);
  if (!check_descriptor_location(sample, inspection)) return;
  check_create_type(policy, descriptor, qemu_type, inspection);
  check_self_extent(descriptor, inspection);
}

// A sparse header with capacity 0 and a descriptor offset: qemu reads up to
// 1 MiB of text from that offset and opens it as a descriptor file.
void parse_capacity_zero(Reader& reader, const Sample& sample, Inspection& inspection) {
  std::uint64_t offset = load_little_64(sample.head, kDescriptorOffset);
  std::string text;
  if (offset <= ~std::uint64_t{0} / kSectorSize && offset * kSectorSize < sample.size) {
    auto length = static_cast<std::size_t>(std::min(sample.size, kMaximumDescriptorBytes));
    text = reader.read_up_to(offset * kSectorSize, length);
  }
  refuse_descriptor_file(until_nul(text), "vmdk_capacity_zero",
                         "its vmdk header has a capacity of 0, which makes qemu read its text "
                         "as a descriptor file whose extents can name any file",
                         inspection);
}

}  // namespace

bool looks_like_vmdk(const Sample& sample) {
  return has_bytes_at(sample.head, 0, kSparseMagic) ||
         has_bytes_at(sample.head, 0, kVmfsSparseMagic) || looks_like_descriptor_file(sample.head);
}

void parse_vmdk(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                Inspection& inspection) {
  inspection.format = "vmdk";
  if (has_bytes_at(sample.head, 0, kVmfsSparseMagic)) {
    inspection.refusals.push_back({"vmdk_vmfs_sparse",
                                   "it is a VMFS sparse (COWD) vmdk, which kiln never accepts; "
                                   "qemu reads a parent file name from its text",
                                   ErrorCode::kImageUnsafe});
    return;
  }
  if (!has_bytes_at(sample.head, 0, kSparseMagic)) {
    auto length = static_cast<std::size_t>(std::min(sample.size, kMaximumDescriptorBytes));
    std::string text = reader.read_up_to(0, length);
    refuse_descriptor_file(until_nul(text), "vmdk_descriptor_file",
                           "it is a vmdk descriptor file with no data of its own; qemu would "
                           "open the files its extents name",
                           inspection);
    return;
  }
  if (sample.head.size() >= kSparseHeaderLength && load_little_64(sample.head, kCapacity) == 0 &&
      load_little_64(sample.head, kDescriptorOffset) != 0) {
    parse_capacity_zero(reader, sample, inspection);
    return;
  }
  parse_sparse_extent(reader, sample, policy, inspection);
}

}  // namespace kiln::image::detail
