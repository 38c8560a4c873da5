// kiln::Error — the one error type of kiln.
//
// Every failure that reaches a caller (kilnctl, and later the RPC layer) is a
// kiln::Error: a stable machine-readable code plus one sentence an operator
// can act on ("image 3f… is not active (status queued)"). Codes never change
// meaning once released; add new ones at the end. lib/ throws kiln::Error at
// module edges; nothing else escapes a public function except std::bad_alloc.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln {

enum class ErrorCode {
  kInvalidArgument,    // a request or flag value is malformed
  kConfigInvalid,      // the configuration file has an unknown key or a bad value
  kInvalidUuid,        // an instance id is not a canonical UUID
  kIoError,            // a filesystem call failed
  kSubprocessFailed,   // a helper program (qemu-img, mkswap) failed or timed out
  kHttpError,          // the HTTP exchange failed (connect, timeout, malformed reply)
  kGlanceError,        // Glance answered with an unexpected status
  kImageNotFound,      // Glance has no image with that id
  kImageNotActive,     // the image exists but its status is not "active"
  kImageFormatRefused, // disk_format/container_format not allowed or unknown
  kChecksumMismatch,   // downloaded bytes do not match os_hash_value / checksum
  kDownloadIncomplete, // the download ended before the announced size
  kConversionFailed,   // qemu-img convert failed
  kFlavorDiskTooSmall, // root_gb is smaller than the image's virtual size
  kInstanceExists,     // an instance directory for that uuid already exists
  kLibvirtError,       // libvirt refused a call; its code and message are in the sentence
  kLockFailed,         // a cross-process lock could not be taken
  kImageUnsafe,        // the inspector refused the image (backing file, data file, ...)
  kImageFormatMismatch,// the image's content does not match its Glance disk_format
  kImageMalformed,     // the image's headers are truncated or inconsistent
  kImageTooLarge,      // virtual size or conversion output above the configured maximum
  kSignatureInvalid,   // image signature missing, unverifiable or wrong
  kInsufficientSpace,  // not enough free space for the download and conversion
  kNotFound,           // an instance, base or file named by the caller does not exist
  kConflict,           // the request contradicts existing state (same uuid, different request)
  kInstanceBroken,     // an instance's directory cannot be trusted (missing disk, broken backing chain)
  kAlreadyRunning,     // another process holds the agent's lock or socket
  kOverloaded,         // too many connections or queued operations; retry later
  kShuttingDown,       // the agent is draining and takes no new work
  kInternalError,      // a bug: an unexpected exception reached a module edge
  kDomainStartFailed,  // the domain was started but is not running (paused on error, crashed, shut off)
  kImageQemuDisagrees, // qemu-img info's reading of an image differs from the inspector's
  kUnsupportedImageProperty,  // an image property kiln cannot honour (named in the sentence)
  kInterrupted,        // the agent stopped (restart, crash) before the operation finished
  kRollbackIncomplete, // a failed boot could not be undone (libvirt unreachable): its directory waits for reconcile
  kBusError,           // the message bus (RabbitMQ) refused, dropped or could not be reached
  kNotAnInstancesPath, // the instances path is missing, not a directory, or holds nothing of kiln's
  kRbdError,           // Ceph refused an RBD call or could not be reached; librados' reason is in the sentence
  kRbdLocationInvalid, // a Glance RBD location is not rbd://<fsid>/<pool>/<image>/<snapshot> as Glance writes it
  kRbdNotSameCluster,  // a Glance RBD location names another Ceph cluster (fsid) than kiln's
  kRbdSnapshotUnprotected,  // the RBD snapshot to clone is not protected (Glance could delete it under the clone)
  kRbdImageNotInCluster,  // images_type = rbd, but the image has no raw RBD location in kiln's cluster to clone
  kLastCode = kRbdImageNotInCluster,  // keep last: code_from_name walks up to it
};

// The stable name of a code, e.g. "image_not_found". Used in JSON output and
// later in RPC replies and metrics labels.
std::string_view code_name(ErrorCode code);

// The code with that stable name, or nullopt.
std::optional<ErrorCode> code_from_name(std::string_view name);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  ErrorCode code() const { return code_; }
  std::string_view code_name() const { return kiln::code_name(code_); }

 private:
  ErrorCode code_;
};

// Throws kIoError with "<what>: <strerror(errno_value)>"; kInsufficientSpace
// when errno_value is ENOSPC or EDQUOT.
[[noreturn]] void throw_io_error(const std::string& what, int errno_value);

}  // namespace kiln
