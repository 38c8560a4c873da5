// Turning a verified download into a raw base with qemu-img.
//
// qemu-img is always told the source format (-f): letting it probe is how a
// qcow2 naming /etc/passwd as its backing file leaked host data in Nova
// (CVE-2015-1850). Glance's disk_format names map to qemu's here, in one place.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "kiln/util/subprocess.h"

namespace kiln::image {

// The qemu block driver for a Glance disk_format ("vhd" -> "vpc", "iso" ->
// "raw"), or nullopt for formats kiln cannot turn into a raw disk.
std::optional<std::string> qemu_format_for(const std::string& disk_format);

// Like Nova's prlimit around qemu-img: a crafted image must not make it eat
// the host's memory or run forever (CVE-2015-5162).
struct ConversionLimits {
  ResourceLimits resources{4ULL << 30, std::nullopt};  // address space 4 GiB
  std::chrono::milliseconds timeout{std::chrono::hours(1)};
};

// qemu-img convert -f <qemu_format> -O raw <source> <destination>; zero runs
// become holes. Throws kiln::Error kConversionFailed with qemu-img's message.
// REQUIRES: `destination` does not exist or may be overwritten.
void convert_to_raw(const std::filesystem::path& source, const std::string& qemu_format,
                    const std::filesystem::path& destination, const ConversionLimits& limits = {});

}  // namespace kiln::image
