#include "kiln/rbd/location.h"

#include <array>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/uuid.h"

namespace kiln::rbd {

namespace {

constexpr std::string_view kScheme = "rbd://";
constexpr std::size_t kMaxComponentLength = 255;  // bytes after decoding; Ceph's own names are far shorter
constexpr std::array<std::string_view, 4> kComponentNames = {"fsid", "pool", "image", "snapshot"};

// What urllib.parse.quote(safe='') leaves as it is.
bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == '~';
}

int upper_hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lower-case hex is not what Python writes
}

// The URL quoted for a message: printable ASCII as is, other bytes as \xNN.
std::string quoted(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (unsigned char c : text.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (text.size() > 200) out += "...";
  return out + "'";
}

[[noreturn]] void refuse(std::string_view url, const std::string& why) {
  throw Error(ErrorCode::kRbdLocationInvalid, "RBD location " + quoted(url) + " is refused: " + why);
}

// A byte a Ceph pool, image or snapshot name kiln passes on may hold:
// printable ASCII except the separators of "<pool>/<image>@<snap>", QEMU's
// "rbd:" option separator ':' and its escape '\', and the space.
bool is_name_byte(unsigned char c) { return c > 0x20 && c < 0x7f && c != '/' && c != '@' && c != ':' && c != '\\'; }

std::string decode(std::string_view url, std::string_view component, std::string_view name) {
  if (component.empty()) refuse(url, "its " + std::string(name) + " is empty");
  std::string out;
  for (std::size_t i = 0; i < component.size(); ++i) {
    auto c = static_cast<unsigned char>(component[i]);
    if (is_unreserved(c)) {
      out += static_cast<char>(c);
      continue;
    }
    if (c != '%') refuse(url, "its " + std::string(name) + " holds a byte Glance would have percent-encoded");
    int high = i + 1 < component.size() ? upper_hex_value(component[i + 1]) : -1;
    int low = i + 2 < component.size() ? upper_hex_value(component[i + 2]) : -1;
    if (high < 0 || low < 0) {
      refuse(url, "its " + std::string(name) + " has an escape that is not %XX with upper-case hex, as Glance writes");
    }
    auto byte = static_cast<unsigned char>(high * 16 + low);
    if (is_unreserved(byte)) {
      refuse(url, "its " + std::string(name) + " escapes a character Glance writes as itself");
    }
    out += static_cast<char>(byte);
    i += 2;
  }
  for (unsigned char c : out) {
    if (!is_name_byte(c)) {
      refuse(url, "its " + std::string(name) +
                      " holds a control character, a space, a non-ASCII byte or one of / @ : \\ (no Ceph name kiln uses)");
    }
  }
  if (out == "." || out == "..") refuse(url, "its " + std::string(name) + " is '" + out + "'");
  if (out.size() > kMaxComponentLength) {
    refuse(url, "its " + std::string(name) + " is longer than " + std::to_string(kMaxComponentLength) + " bytes");
  }
  return out;
}

}  // namespace

std::string Location::spec() const { return pool + "/" + image + "@" + snapshot; }

Location parse_location(std::string_view url) {
  if (url.size() > kMaxLocationLength) {
    refuse(url, "it is longer than " + std::to_string(kMaxLocationLength) + " bytes");
  }
  if (url.substr(0, kScheme.size()) != kScheme) refuse(url, "it does not start with rbd://");
  std::vector<std::string_view> pieces;
  std::string_view rest = url.substr(kScheme.size());
  while (true) {
    auto slash = rest.find('/');
    pieces.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (pieces.size() != kComponentNames.size()) {
    refuse(url, "it has " + std::to_string(pieces.size()) +
                    " components; a snapshot's location has four (fsid/pool/image/snapshot)");
  }
  Location location;
  std::string* fields[] = {&location.fsid, &location.pool, &location.image, &location.snapshot};
  for (std::size_t i = 0; i < pieces.size(); ++i) *fields[i] = decode(url, pieces[i], kComponentNames[i]);
  if (!is_canonical_uuid(location.fsid)) refuse(url, "its fsid is not a UUID");
  location.fsid = normalize_uuid(location.fsid);
  return location;
}

std::string format_location(const Location& location) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto encode = [](const std::string& text) {
    std::string out;
    for (unsigned char c : text) {
      if (is_unreserved(c)) {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
    return out;
  };
  return std::string(kScheme) + encode(location.fsid) + "/" + encode(location.pool) + "/" + encode(location.image) +
         "/" + encode(location.snapshot);
}

}  // namespace kiln::rbd
