// A second opinion on an image the inspector passed: qemu-img info's reading.
//
// Promise: require_qemu_agrees() returns only when qemu-img, told the format
// (-f) and run in kiln's sandbox (it can open the image, read-only, and
// nothing else), reads the image as the inspector did: the same format and
// virtual size, no backing file, no external data file ("data-file"), and for
// vmdk every extent in the image file itself. Anything else refuses the image
// with kImageQemuDisagrees and a sentence naming each difference; so does
// qemu-img failing to open it (its message names the file it looked for).
// Two parsers of the same bytes that agree leave an attacker one reading to
// fool, not two; where they differ is where attacks live. It costs one
// sandboxed `qemu-img info` per image (about 20 ms on the test VM, see the
// report in tests/unit/test_sandbox.cpp), nothing per boot.
// Thread-safe; reads only headers (qemu-img info does no data I/O).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/image/inspector.h"
#include "kiln/util/subprocess.h"

namespace kiln::image {

// What `qemu-img info --output=json` says, reduced to what is compared.
struct QemuImageInfo {
  std::string format;          // qemu's driver name ("vpc" for vhd)
  std::uint64_t virtual_size = 0;
  std::string filename;        // the path qemu opened (as the sandbox shows it)
  std::string backing_file;    // backing-filename / full-backing-filename, if any
  std::string data_file;       // format-specific data-file (qcow2), if any
  std::vector<std::string> extent_files;  // vmdk: every extent's filename
};

// Nova's limits for qemu-img info (1 GiB address space, 30 s CPU), a 60 s
// timeout, and no file may be written at all.
struct InfoLimits {
  ResourceLimits resources{1ULL << 30, 30, 0};
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

// Parses qemu-img info's JSON. Throws kImageQemuDisagrees when it is not the
// JSON qemu-img writes (no format or virtual-size).
QemuImageInfo parse_qemu_image_info(std::string_view json, const std::string& image_label);

// Runs `qemu-img info --output=json -f <qemu_format>` on `path`, sandboxed.
// Throws kImageQemuDisagrees with qemu's message when it cannot open the
// image, kSubprocessFailed when the sandbox cannot be built or it times out.
QemuImageInfo qemu_image_info(const std::filesystem::path& path, const std::string& qemu_format,
                              const std::string& image_label, const InfoLimits& limits = {});

// The comparison alone. `inspection` may be absent (a test that turned the
// inspector off): then only the references (backing, data file, extents) count.
// Throws kImageQemuDisagrees naming every difference.
void require_agreement(const std::optional<Inspection>& inspection, const QemuImageInfo& qemu,
                       const std::string& qemu_format, const std::string& image_label);

// qemu counts a disk in 512-byte sectors: it reports a 65541-byte raw file
// (or a qcow2 header saying so) as 66048 bytes. The inspector's exact size,
// rounded up so, is what qemu must report, and what a conversion writes.
std::uint64_t qemu_virtual_size(std::uint64_t inspected_virtual_size);

// qemu_image_info() and require_agreement(). Returns qemu's reading.
QemuImageInfo require_qemu_agrees(const std::filesystem::path& path, const std::optional<Inspection>& inspection,
                                  const std::string& qemu_format, const std::string& image_label,
                                  const InfoLimits& limits = {});

}  // namespace kiln::image
