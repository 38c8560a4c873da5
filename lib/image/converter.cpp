#include "kiln/image/converter.h"

#include <signal.h>

#include <algorithm>
#include <map>

#include "kiln/util/error.h"
#include "kiln/util/sandbox.h"

namespace kiln::image {

namespace fs = std::filesystem;

std::optional<std::string> qemu_format_for(const std::string& disk_format) {
  static const std::map<std::string, std::string> formats = {
      {"raw", "raw"},   {"qcow2", "qcow2"}, {"vmdk", "vmdk"}, {"vdi", "vdi"},
      {"vhd", "vpc"},   {"vhdx", "vhdx"},   {"iso", "raw"},   {"ami", "raw"},
      {"aki", "raw"},   {"ari", "raw"},
  };
  auto it = formats.find(disk_format);
  if (it == formats.end()) return std::nullopt;
  return it->second;
}

std::uint64_t conversion_cpu_seconds(std::uint64_t virtual_size) {
  constexpr std::uint64_t kBaseSeconds = 60;
  constexpr std::uint64_t kSecondsPerGiB = 15;
  constexpr std::uint64_t kGiB = 1ULL << 30;
  std::uint64_t gib = virtual_size / kGiB + (virtual_size % kGiB != 0 ? 1 : 0);
  return kBaseSeconds + kSecondsPerGiB * gib;
}

namespace {

ResourceLimits limits_for(const ConversionLimits& limits, std::optional<std::uint64_t> virtual_size) {
  ResourceLimits resources = limits.resources;
  resources.file_size_bytes.reset();
  if (virtual_size) {
    // RLIMIT_FSIZE 0 would mean "no file at all", which an empty disk does not need either.
    resources.file_size_bytes = *virtual_size;
    std::uint64_t budget = conversion_cpu_seconds(*virtual_size);
    resources.cpu_seconds = std::min(budget, limits.resources.cpu_seconds.value_or(budget));
  }
  return resources;
}

void check_output_size(std::uint64_t written, std::optional<std::uint64_t> virtual_size, const fs::path& source) {
  if (!virtual_size || written == *virtual_size) return;
  if (written > *virtual_size) {
    throw Error(ErrorCode::kImageTooLarge, "qemu-img's raw output for " + source.string() + " is " +
                                               std::to_string(written) + " bytes, past the verified virtual size of " +
                                               std::to_string(*virtual_size));
  }
  throw Error(ErrorCode::kConversionFailed, "qemu-img's raw output for " + source.string() + " is " +
                                                std::to_string(written) + " bytes, not the verified virtual size of " +
                                                std::to_string(*virtual_size));
}

}  // namespace

void convert_to_raw(const fs::path& source, const std::string& qemu_format, const fs::path& destination,
                    std::optional<std::uint64_t> virtual_size, const ConversionLimits& limits) {
  SandboxOutput output(destination);
  Sandbox sandbox;
  std::string input = sandbox.add_read_only(source, "input");
  std::string raw = sandbox.add_writable(output.path(), "output");
  Command command{{"qemu-img", "convert", "-q", "-f", qemu_format, "-O", "raw", input, raw},
                  limits_for(limits, virtual_size),
                  limits.timeout,
                  std::move(sandbox)};
  CommandResult result;
  try {
    result = run(command);
  } catch (const Error& error) {
    throw Error(ErrorCode::kConversionFailed, "cannot convert " + source.string() + ": " + error.what());
  }
  // qemu-img is pid 1 of its pid namespace, where an unhandled SIGXFSZ is
  // ignored: past RLIMIT_FSIZE its write or resize fails with EFBIG instead.
  bool hit_size_limit = result.err.find("File too large") != std::string::npos || result.exit_code == 128 + SIGXFSZ;
  if (virtual_size && result.exit_code != 0 && hit_size_limit) {
    throw Error(ErrorCode::kImageTooLarge, "qemu-img convert of " + source.string() +
                                               " tried to write past the verified virtual size of " +
                                               std::to_string(*virtual_size) + " bytes and was stopped");
  }
  if (result.timed_out || result.exit_code != 0) {
    std::string detail = result.err.empty() ? result.out : result.err;
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    std::string how = result.timed_out ? "timed out after " + std::to_string(limits.timeout.count()) + " ms"
                                       : "failed with exit code " + std::to_string(result.exit_code);
    throw Error(ErrorCode::kConversionFailed, "qemu-img convert -f " + qemu_format + " of " + source.string() +
                                                  " " + how + (detail.empty() ? "" : ": " + detail));
  }
  check_output_size(output.size(), virtual_size, source);
  output.publish();
}

}  // namespace kiln::image
