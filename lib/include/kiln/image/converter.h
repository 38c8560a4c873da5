// Turning a verified download into a raw base with qemu-img.
//
// qemu-img is always told the source format (-f): letting it probe is how a
// qcow2 naming /etc/passwd as its backing file leaked host data in Nova
// (CVE-2015-1850). Glance's disk_format names map to qemu's here, in one place.
//
// Every qemu-img run here is sandboxed (kiln/util/sandbox.h): it can open its
// input, read-only, and its output, nothing else, so a backing file, data
// file or extent that the inspector missed names a file that does not exist
// for it. And it is bounded by what was verified: its output may not grow past
// the virtual size the inspector and qemu-img info agreed on, and its CPU time
// grows with that size (conversion_cpu_seconds).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "kiln/util/subprocess.h"

namespace kiln::image {

// The qemu block driver for a Glance disk_format ("vhd" -> "vpc", "iso" ->
// "raw"), or nullopt for formats kiln cannot turn into a raw disk.
std::optional<std::string> qemu_format_for(const std::string& disk_format);

// Like Nova's prlimit around qemu-img: a crafted image must not make it eat
// the host's memory or run forever (CVE-2015-5162). `resources.cpu_seconds`,
// when set, caps the proportional CPU budget below; file_size_bytes is set
// per image and ignored here.
struct ConversionLimits {
  ResourceLimits resources{4ULL << 30, std::nullopt, std::nullopt};  // address space 4 GiB
  std::chrono::milliseconds timeout{std::chrono::hours(1)};
};

// CPU seconds qemu-img convert may use for an image of `virtual_size` bytes:
// 60 s + 15 s per GiB (rounded up). The worst conversion measured (a 1 GiB
// zlib-compressed qcow2 of compressible data: inflate plus writing every
// block) used 3.8 s of CPU per GiB on the test VM, so this is about 4x that
// per GiB, with room for slower CPUs; the 60 s covers the fixed start-up of
// small images many times over. A spinning or decompression-bomb qemu-img is
// killed (SIGKILL at RLIMIT_CPU) long before the wall-clock timeout.
std::uint64_t conversion_cpu_seconds(std::uint64_t virtual_size);

// qemu-img convert -f <qemu_format> -O raw <source> <new file>, sandboxed;
// zero runs become holes. The output is written in a private directory next
// to `destination` and renamed to it only when complete. With `virtual_size` (the size
// both parsers agreed on), the output may not grow past it (RLIMIT_FSIZE) and
// must be exactly that long afterwards, and the CPU budget follows it.
// Throws kiln::Error kConversionFailed with qemu-img's message (which names a
// file it could not open), kImageTooLarge when the output grew past
// `virtual_size`, kSubprocessFailed when the sandbox cannot be built.
// REQUIRES: `destination` does not exist or may be overwritten.
void convert_to_raw(const std::filesystem::path& source, const std::string& qemu_format,
                    const std::filesystem::path& destination, std::optional<std::uint64_t> virtual_size,
                    const ConversionLimits& limits = {});

}  // namespace kiln::image
