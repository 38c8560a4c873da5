// Private to lib/image: the pieces every format parser of the inspector shares.
//
// A parser gets the Sample (the image's first kHeadBytes and last kTailBytes,
// read once), a Reader for anything else, and the Inspection to fill. It adds
// findings that do not stop parsing to inspection.refusals and calls
// refuse_malformed() for those that do; the inspector records that finding
// and keeps what the parser filled in so far. Integer loads check their
// bounds too: a field a parser failed to check refuses the image as
// malformed instead of reading out of bounds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kiln/image/byte_source.h"
#include "kiln/image/inspector.h"

namespace kiln::image::detail {

// Enough for every signature at a fixed offset: the ISO 9660 volume
// descriptors (32 KiB + 16 × 2 KiB) end at 64 KiB.
inline constexpr std::size_t kHeadBytes = 64 * 1024;
// vmdk's footer, footer marker and end-of-stream marker; vhd's footer is the last 512.
inline constexpr std::size_t kTailBytes = 1536;
inline constexpr std::uint64_t kSectorSize = 512;

struct Sample {
  std::uint64_t size = 0;  // of the whole image
  std::string head;        // bytes [0, min(size, kHeadBytes))
  std::string tail;        // bytes [size - min(size, kTailBytes), size)
};

// Thrown by a parser to stop with one finding.
struct Refusal {
  Finding finding;
};

[[noreturn]] void refuse_malformed(std::string rule, std::string sentence);

// Reads for one inspection, charged against kMaxInspectionBytes.
class Reader {
 public:
  explicit Reader(const ByteSource& source) : source_(source) {}

  std::uint64_t size() const { return source_.size(); }
  std::uint64_t bytes_read() const { return bytes_read_; }

  // Up to `length` bytes at `offset` (fewer at the end of the image).
  std::string read_up_to(std::uint64_t offset, std::size_t length);

  // Exactly `length` bytes at `offset`, or refuse_malformed(rule, "<what>
  // lies past the end of the image").
  std::string read_exact(std::uint64_t offset, std::size_t length, const std::string& rule,
                         std::string_view what);

 private:
  const ByteSource& source_;
  std::uint64_t bytes_read_ = 0;
};

// Integer fields of a header. Offsets past the end of `bytes` refuse the
// image as malformed ("header_truncated") rather than read out of bounds.
std::uint16_t load_big_16(std::string_view bytes, std::size_t offset);
std::uint32_t load_big_32(std::string_view bytes, std::size_t offset);
std::uint64_t load_big_64(std::string_view bytes, std::size_t offset);
std::uint16_t load_little_16(std::string_view bytes, std::size_t offset);
std::uint32_t load_little_32(std::string_view bytes, std::size_t offset);
std::uint64_t load_little_64(std::string_view bytes, std::size_t offset);

// True when `bytes` holds `expected` at `offset`.
bool has_bytes_at(std::string_view bytes, std::size_t offset, std::string_view expected);

// True when [offset, offset + length) lies within [0, limit), without overflow.
bool fits_within(std::uint64_t offset, std::uint64_t length, std::uint64_t limit);

bool is_power_of_two(std::uint64_t value);

// `text` for a sentence: quoted, control and non-ASCII bytes shown as '?',
// cut to a readable length. Names in images are chosen by whoever uploaded them.
std::string quoted_name(std::string_view text);

// The number with its unit for sentences, e.g. "10485760 bytes".
std::string bytes_phrase(std::uint64_t bytes);

// Each format: a signature test on the sample and a parser. A parser runs
// only on a sample its signature test accepted.
bool looks_like_qcow2(const Sample& sample);
void parse_qcow2(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                 Inspection& inspection);
bool looks_like_qed(const Sample& sample);
void parse_qed(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
               Inspection& inspection);
bool looks_like_vmdk(const Sample& sample);
void parse_vmdk(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                Inspection& inspection);
bool looks_like_vhd(const Sample& sample);
void parse_vhd(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
               Inspection& inspection);
bool looks_like_vhdx(const Sample& sample);
void parse_vhdx(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                Inspection& inspection);
bool looks_like_vdi(const Sample& sample);
void parse_vdi(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
               Inspection& inspection);
bool looks_like_luks(const Sample& sample);
void parse_luks(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                Inspection& inspection);
bool looks_like_iso(const Sample& sample);
bool looks_like_gpt(const Sample& sample);
bool looks_like_mbr(const Sample& sample);
// iso, gpt, mbr and raw: qemu reads them as raw, so the guest sees the whole file.
void parse_raw_family(Reader& reader, const Sample& sample, const InspectorPolicy& policy,
                      Inspection& inspection);

}  // namespace kiln::image::detail
