#include "kiln/rpc/message.h"

#include "kiln/rpc/wire.h"

namespace kiln::rpc {

std::string Peer::describe() const {
  if (uid && pid) return "uid=" + std::to_string(*uid) + " pid=" + std::to_string(*pid);
  return address.empty() ? "in-process" : address;
}

unsigned http_status_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kInvalidUuid:
    case ErrorCode::kFlavorDiskTooSmall:
      return 400;
    case ErrorCode::kNotFound:
    case ErrorCode::kImageNotFound:
      return 404;
    case ErrorCode::kConflict:
    case ErrorCode::kInstanceExists:
    case ErrorCode::kImageNotActive:
      return 409;
    case ErrorCode::kImageFormatRefused:
    case ErrorCode::kImageUnsafe:
    case ErrorCode::kImageFormatMismatch:
    case ErrorCode::kImageMalformed:
    case ErrorCode::kImageTooLarge:
    case ErrorCode::kSignatureInvalid:
    case ErrorCode::kChecksumMismatch:
    case ErrorCode::kImageQemuDisagrees:
    case ErrorCode::kUnsupportedImageProperty:
    case ErrorCode::kRbdLocationInvalid:
    case ErrorCode::kRbdNotSameCluster:
    case ErrorCode::kRbdSnapshotUnprotected:
    case ErrorCode::kRbdImageNotInCluster:
      return 422;
    case ErrorCode::kOverloaded:
    case ErrorCode::kShuttingDown:
    case ErrorCode::kInterrupted:
      return 503;
    // The host's own disk is full: RFC 4918's Insufficient Storage, never a
    // 502, which would send an operator looking at Glance.
    case ErrorCode::kInsufficientSpace:
      return 507;
    case ErrorCode::kHttpError:
    case ErrorCode::kGlanceError:
    case ErrorCode::kDownloadIncomplete:
    case ErrorCode::kLibvirtError:
    case ErrorCode::kDomainStartFailed:
    case ErrorCode::kRollbackIncomplete:  // libvirt went away mid-boot: a peer's fault, retried after reconcile
    case ErrorCode::kRbdError:            // Ceph is a peer, as Glance and libvirt are
    case ErrorCode::kBusError:            // the broker, a peer
      return 502;
    default:
      return 500;
  }
}

bool is_valid_utf8(std::string_view text) { return utf8_prefix_length(text) == text.size(); }

std::size_t utf8_prefix_length(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    // RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
    unsigned char low = 0x80, high = 0xBF;
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return i;
    }
    if (text.size() - i < length) return i;
    for (std::size_t k = 1; k < length; ++k) {
      auto byte = static_cast<unsigned char>(text[i + k]);
      if (byte < (k == 1 ? low : 0x80) || byte > (k == 1 ? high : 0xBF)) return i;
    }
    i += length;
  }
  return i;
}

std::string escape_invalid_utf8(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string escaped;
  escaped.reserve(text.size());
  while (!text.empty()) {
    std::size_t valid = utf8_prefix_length(text);
    escaped.append(text.substr(0, valid));
    if (valid == text.size()) break;
    auto byte = static_cast<unsigned char>(text[valid]);
    escaped += "\\x";
    escaped += kHex[byte >> 4];
    escaped += kHex[byte & 0xF];
    text.remove_prefix(valid + 1);
  }
  return escaped;
}

Response error_response(unsigned status, ErrorCode code, const std::string& message) {
  Response response;
  response.status = status;
  response.body = error_envelope(code, message);
  return response;
}

Response error_response(ErrorCode code, const std::string& message) {
  return error_response(http_status_for(code), code, message);
}

}  // namespace kiln::rpc
