#include "kiln/image/converter.h"

#include <map>

#include "kiln/util/error.h"

namespace kiln::image {

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

void convert_to_raw(const std::filesystem::path& source, const std::string& qemu_format,
                    const std::filesystem::path& destination, const ConversionLimits& limits) {
  Command command{{"qemu-img", "convert", "-q", "-f", qemu_format, "-O", "raw", source.string(),
                   destination.string()},
                  limits.resources,
                  limits.timeout};
  try {
    run_checked(command);
  } catch (const Error& error) {
    throw Error(ErrorCode::kConversionFailed, error.what());
  }
}

}  // namespace kiln::image
