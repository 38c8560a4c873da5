// The native image format inspector: what an uploaded image really is, and
// whether it is safe to hand to qemu-img.
//
// Glance keeps whatever bytes a user uploads under whatever disk_format the
// user claims, and qemu, once it opens an image, follows what the image's
// headers say: a qcow2 backing file or external data file, a vmdk extent
// naming a host path (CVE-2015-1850, CVE-2022-47951, CVE-2024-32498). So
// before any qemu tool sees a download, inspect() reads its headers natively,
// reports its format, virtual size and every reference to another file, and
// lists each reason to refuse it as a Finding with a stable rule id.
//
// Promises: only headers and metadata are read, at known offsets. Every size
// or count taken from a header is checked against the image's length and
// against a fixed cap before it is used, so one inspection reads at most
// kMaxInspectionBytes and nothing it allocates grows with what an image
// declares. Hostile or damaged input never crashes and never throws:
// truncated or inconsistent headers become findings with code
// kImageMalformed. Only a failing read of the file itself throws (kIoError).
// All functions are thread-safe; an Inspection is a plain value.
//
// Formats are named as Glance's disk_format names them ("vhd" where qemu says
// "vpc"), plus "gpt", "mbr" and "luks", and "raw" for anything else. A gpt or
// mbr partition table is only reported when no other format matched: inside a
// vhd, or in a hybrid iso, it is guest data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/image/byte_source.h"
#include "kiln/util/error.h"

namespace kiln::image {

// The most bytes one inspection reads: the first 64 KiB and the last 1.5 KiB
// of the image, plus at most a 1 MiB vmdk descriptor and vhdx's tables.
inline constexpr std::uint64_t kMaxInspectionBytes = 4 * 1024 * 1024;

struct InspectorPolicy {
  // vmdk create types accepted; Glance's [image_format] vmdk_allowed_types
  // default. Every other type (monolithicFlat, twoGbMaxExtentSparse, ...)
  // keeps its data in other files.
  std::vector<std::string> vmdk_allowed_create_types{"monolithicSparse", "streamOptimized"};
  // Largest virtual size accepted, in bytes; 0 means no limit.
  std::uint64_t max_virtual_size = 0;
};

// One reason to refuse an image.
struct Finding {
  std::string rule;      // stable snake_case id, e.g. "qcow2_backing_file"
  std::string sentence;  // what was found and why it matters, for an operator
  ErrorCode code = ErrorCode::kImageUnsafe;  // kImageUnsafe, kImageMalformed or kImageTooLarge
};

// One extent line of a vmdk descriptor, as qemu's sscanf reads it (fields
// split by any blanks, tabs and line ends included).
struct VmdkExtent {
  std::string access;        // RW, RDONLY or NOACCESS
  std::uint64_t sectors = 0;
  std::string type;          // SPARSE, FLAT, ZERO, VMFS, ...
  std::string file_name;     // as the descriptor writes it; empty for ZERO extents
};

struct Inspection {
  std::string format = "raw";
  // Every format whose signature was found, before partition tables inside
  // other formats were set aside; more than one real format is a refusal.
  std::vector<std::string> matched_formats;
  std::uint64_t virtual_size = 0;             // bytes the guest sees
  std::optional<std::uint64_t> cluster_size;  // qcow2/qed cluster, vmdk grain, vhd/vhdx/vdi block
  std::uint32_t version = 0;                  // qcow2 2 or 3, vmdk 1 to 3, luks 1 or 2; else 0

  // References to other files. Any of them is a refusal; they are reported
  // so that the operator sees what the image tried to reach.
  std::string backing_file;  // qcow2/qed backing file, vmdk parent hint, vhd/vhdx/vdi parent
  std::string data_file;     // qcow2 external data file (header extension 0x44415441)

  // qcow2 feature bit fields (zero for version 2 and for other formats).
  std::uint64_t incompatible_features = 0;
  std::uint64_t compatible_features = 0;
  std::uint64_t autoclear_features = 0;

  // vmdk only: the descriptor's createType (its first occurrence, as qemu
  // finds it) and its first kMaxVmdkExtents extent lines.
  std::string vmdk_create_type;
  std::vector<VmdkExtent> vmdk_extents;

  std::vector<Finding> refusals;  // empty when the image is safe as its detected format
  std::uint64_t bytes_read = 0;   // never above kMaxInspectionBytes

  bool safe() const { return refusals.empty(); }
  bool refused_by(std::string_view rule) const;
};

// Extent lines kept from one vmdk descriptor; more are counted, not kept.
inline constexpr std::size_t kMaxVmdkExtents = 64;

// Inspects the bytes of `source`. Never throws for bad content; throws
// kiln::Error kIoError only when a read of the source fails.
Inspection inspect(const ByteSource& source, const InspectorPolicy& policy = {});

// inspect() over a regular file. Throws kInvalidArgument, without blocking,
// when `path` is not a regular file (a FIFO, a device, a directory, a socket
// or a symbolic link), and kIoError when it cannot be opened or read.
Inspection inspect_file(const std::filesystem::path& path, const InspectorPolicy& policy = {});

// True when content detected as `detected_format` may be used as the Glance
// `disk_format`: the same name, or raw/gpt/mbr content for "raw" (and for
// the ami/aki/ari family, which qemu reads as raw).
bool disk_format_accepts(std::string_view disk_format, std::string_view detected_format);

// Returns when the inspected image is safe to hand to qemu-img as
// `expected_disk_format`. Otherwise throws kiln::Error naming `image_label`
// and every reason, with the code of the most telling one:
// kImageFormatMismatch when the content is not `expected_disk_format`, else
// kImageTooLarge, else kImageMalformed, else kImageUnsafe.
void require_safe(const Inspection& inspection, const std::string& expected_disk_format,
                  const std::string& image_label);

}  // namespace kiln::image
