#include <algorithm>

#include "inspector_internal.h"

namespace kiln::image::detail {

namespace {

// Long enough for any honest file name, short enough for a log line.
constexpr std::size_t kMaxQuotedLength = 200;

void require_field(std::string_view bytes, std::size_t offset, std::size_t width) {
  if (offset > bytes.size() || bytes.size() - offset < width) {
    refuse_malformed("header_truncated", "a header field lies past the bytes that were read");
  }
}

template <typename Integer>
Integer load_big(std::string_view bytes, std::size_t offset) {
  require_field(bytes, offset, sizeof(Integer));
  Integer value = 0;
  for (std::size_t index = 0; index < sizeof(Integer); ++index) {
    value = static_cast<Integer>((value << 8) | static_cast<unsigned char>(bytes[offset + index]));
  }
  return value;
}

template <typename Integer>
Integer load_little(std::string_view bytes, std::size_t offset) {
  require_field(bytes, offset, sizeof(Integer));
  Integer value = 0;
  for (std::size_t index = sizeof(Integer); index > 0; --index) {
    value = static_cast<Integer>((value << 8) |
                                 static_cast<unsigned char>(bytes[offset + index - 1]));
  }
  return value;
}

}  // namespace

void refuse_malformed(std::string rule, std::string sentence) {
  throw Refusal{Finding{std::move(rule), std::move(sentence), ErrorCode::kImageMalformed}};
}

std::string Reader::read_up_to(std::uint64_t offset, std::size_t length) {
  if (length > kMaxInspectionBytes - bytes_read_) {
    refuse_malformed("read_limit", "its headers need more than " +
                                       bytes_phrase(kMaxInspectionBytes) +
                                       " of reads, the inspector's limit");
  }
  std::string bytes = source_.read_at(offset, length);
  bytes_read_ += bytes.size();
  return bytes;
}

std::string Reader::read_exact(std::uint64_t offset, std::size_t length, const std::string& rule,
                               std::string_view what) {
  if (!fits_within(offset, length, size())) {
    refuse_malformed(rule, std::string(what) + " lies past the end of the image");
  }
  std::string bytes = read_up_to(offset, length);
  if (bytes.size() != length) {
    refuse_malformed(rule, std::string(what) + " lies past the end of the image");
  }
  return bytes;
}

std::uint16_t load_big_16(std::string_view bytes, std::size_t offset) {
  return load_big<std::uint16_t>(bytes, offset);
}
std::uint32_t load_big_32(std::string_view bytes, std::size_t offset) {
  return load_big<std::uint32_t>(bytes, offset);
}
std::uint64_t load_big_64(std::string_view bytes, std::size_t offset) {
  return load_big<std::uint64_t>(bytes, offset);
}
std::uint16_t load_little_16(std::string_view bytes, std::size_t offset) {
  return load_little<std::uint16_t>(bytes, offset);
}
std::uint32_t load_little_32(std::string_view bytes, std::size_t offset) {
  return load_little<std::uint32_t>(bytes, offset);
}
std::uint64_t load_little_64(std::string_view bytes, std::size_t offset) {
  return load_little<std::uint64_t>(bytes, offset);
}

bool has_bytes_at(std::string_view bytes, std::size_t offset, std::string_view expected) {
  return offset <= bytes.size() && bytes.substr(offset, expected.size()) == expected;
}

bool fits_within(std::uint64_t offset, std::uint64_t length, std::uint64_t limit) {
  return length <= limit && offset <= limit - length;
}

bool is_power_of_two(std::uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

std::string quoted_name(std::string_view text) {
  std::string shown = "\"";
  for (char character : text.substr(0, kMaxQuotedLength)) {
    auto byte = static_cast<unsigned char>(character);
    shown += (byte >= 0x20 && byte < 0x7f && byte != '"') ? character : '?';
  }
  if (text.size() > kMaxQuotedLength) shown += "...";
  return shown + "\"";
}

std::string bytes_phrase(std::uint64_t bytes) { return std::to_string(bytes) + " bytes"; }

}  // namespace kiln::image::detail
