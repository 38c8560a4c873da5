#include "kiln/util/text.h"

#include <cstdint>
#include <cstdio>

namespace kiln {

namespace {

// The length of the well-formed UTF-8 sequence at text[i] and its code point,
// or 0 when the bytes there are not one (overlong, surrogate, past U+10FFFF,
// truncated).
std::size_t sequence_at(std::string_view text, std::size_t i, std::uint32_t& code) {
  auto byte = static_cast<unsigned char>(text[i]);
  std::size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xe ? 3 : (byte >> 3) == 0x1e ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  code = length == 1 ? byte : byte & (0x7fU >> length);
  for (std::size_t k = 1; k < length; ++k) {
    auto next = static_cast<unsigned char>(text[i + k]);
    if ((next & 0xc0) != 0x80) return 0;
    code = (code << 6) | (next & 0x3f);
  }
  static constexpr std::uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < kSmallest[length] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
  return length;
}

std::string hex_byte(unsigned char byte) {
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "\\x%02x", byte);
  return buffer;
}

}  // namespace

bool is_utf8(std::string_view text) {
  std::uint32_t code = 0;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t length = sequence_at(text, i, code);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::uint32_t code = 0;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t length = sequence_at(text, i, code);
    if (length == 0) {
      out += hex_byte(static_cast<unsigned char>(text[i]));
      i += 1;
      continue;
    }
    if (code == '\n') {
      out += "\\n";
    } else if (code == '\t') {
      out += "\\t";
    } else if (code == '\r') {
      out += "\\r";
    } else if (code == 0x1b) {
      out += "\\e";
    } else if (code == '\\') {
      out += "\\\\";
    } else if (code < 0x20 || code == 0x7f) {
      out += hex_byte(static_cast<unsigned char>(code));
    } else if (code >= 0x80 && code < 0xa0) {
      char buffer[16];
      std::snprintf(buffer, sizeof buffer, "\\u{%04x}", static_cast<unsigned>(code));
      out += buffer;
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  return out;
}

}  // namespace kiln
