#include "kiln/util/error.h"

#include <cerrno>
#include <cstring>

namespace kiln {

std::string_view code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kConfigInvalid: return "config_invalid";
    case ErrorCode::kInvalidUuid: return "invalid_uuid";
    case ErrorCode::kIoError: return "io_error";
    case ErrorCode::kSubprocessFailed: return "subprocess_failed";
    case ErrorCode::kHttpError: return "http_error";
    case ErrorCode::kGlanceError: return "glance_error";
    case ErrorCode::kImageNotFound: return "image_not_found";
    case ErrorCode::kImageNotActive: return "image_not_active";
    case ErrorCode::kImageFormatRefused: return "image_format_refused";
    case ErrorCode::kChecksumMismatch: return "checksum_mismatch";
    case ErrorCode::kDownloadIncomplete: return "download_incomplete";
    case ErrorCode::kConversionFailed: return "conversion_failed";
    case ErrorCode::kFlavorDiskTooSmall: return "flavor_disk_too_small";
    case ErrorCode::kInstanceExists: return "instance_exists";
    case ErrorCode::kLibvirtError: return "libvirt_error";
    case ErrorCode::kLockFailed: return "lock_failed";
    case ErrorCode::kImageUnsafe: return "image_unsafe";
    case ErrorCode::kImageFormatMismatch: return "image_format_mismatch";
    case ErrorCode::kImageMalformed: return "image_malformed";
    case ErrorCode::kImageTooLarge: return "image_too_large";
    case ErrorCode::kSignatureInvalid: return "signature_invalid";
    case ErrorCode::kInsufficientSpace: return "insufficient_space";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kInstanceBroken: return "instance_broken";
    case ErrorCode::kAlreadyRunning: return "already_running";
    case ErrorCode::kOverloaded: return "overloaded";
    case ErrorCode::kShuttingDown: return "shutting_down";
    case ErrorCode::kInternalError: return "internal_error";
    case ErrorCode::kDomainStartFailed: return "domain_start_failed";
    case ErrorCode::kImageQemuDisagrees: return "image_qemu_disagrees";
    case ErrorCode::kUnsupportedImageProperty: return "unsupported_image_property";
    case ErrorCode::kInterrupted: return "interrupted";
    case ErrorCode::kRollbackIncomplete: return "rollback_incomplete";
    case ErrorCode::kBusError: return "bus_error";
    case ErrorCode::kNotAnInstancesPath: return "not_an_instances_path";
    case ErrorCode::kRbdError: return "rbd_error";
    case ErrorCode::kRbdLocationInvalid: return "rbd_location_invalid";
    case ErrorCode::kRbdNotSameCluster: return "rbd_not_same_cluster";
    case ErrorCode::kRbdSnapshotUnprotected: return "rbd_snapshot_unprotected";
    case ErrorCode::kRbdImageNotInCluster: return "rbd_image_not_in_cluster";
  }
  return "unknown";
}

std::optional<ErrorCode> code_from_name(std::string_view name) {
  for (int value = 0; value <= static_cast<int>(ErrorCode::kLastCode); ++value) {
    auto code = static_cast<ErrorCode>(value);
    if (code_name(code) == name) return code;
  }
  return std::nullopt;
}

void throw_io_error(const std::string& what, int errno_value) {
  // A full disk or quota is the operator's to free, not a fault to retry.
  bool full = errno_value == ENOSPC || errno_value == EDQUOT;
  throw Error(full ? ErrorCode::kInsufficientSpace : ErrorCode::kIoError, what + ": " + std::strerror(errno_value));
}

}  // namespace kiln
