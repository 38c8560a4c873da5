#include "kiln/rpc/message.h"

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
      return 422;
    case ErrorCode::kOverloaded:
    case ErrorCode::kShuttingDown:
    case ErrorCode::kInterrupted:
    case ErrorCode::kInsufficientSpace:
      return 503;
    case ErrorCode::kHttpError:
    case ErrorCode::kGlanceError:
    case ErrorCode::kDownloadIncomplete:
    case ErrorCode::kLibvirtError:
    case ErrorCode::kDomainStartFailed:
      return 502;
    default:
      return 500;
  }
}

Response error_response(unsigned status, ErrorCode code, const std::string& message) {
  Response response;
  response.status = status;
  response.body = {{"error", {{"code", std::string(code_name(code))}, {"message", message}}}};
  return response;
}

Response error_response(ErrorCode code, const std::string& message) {
  return error_response(http_status_for(code), code, message);
}

}  // namespace kiln::rpc
