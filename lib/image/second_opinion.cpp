#include "kiln/image/second_opinion.h"

#include <nlohmann/json.hpp>

#include "kiln/util/error.h"
#include "kiln/util/sandbox.h"

namespace kiln::image {

namespace {

using nlohmann::json;

std::string text_at(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

void read_format_specific(const json& info, QemuImageInfo& result) {
  auto specific = info.find("format-specific");
  if (specific == info.end() || !specific->is_object()) return;
  auto data = specific->find("data");
  if (data == specific->end() || !data->is_object()) return;
  result.data_file = text_at(*data, "data-file");
  auto extents = data->find("extents");
  if (extents == data->end() || !extents->is_array()) return;
  for (const json& extent : *extents) {
    if (extent.is_object()) result.extent_files.push_back(text_at(extent, "filename"));
  }
}

}  // namespace

QemuImageInfo parse_qemu_image_info(std::string_view text, const std::string& image_label) {
  json info = json::parse(text, nullptr, false);
  auto size = info.is_object() ? info.find("virtual-size") : info.end();
  if (!info.is_object() || size == info.end() || !size->is_number_unsigned() || text_at(info, "format").empty()) {
    throw Error(ErrorCode::kImageQemuDisagrees,
                "image " + image_label + ": qemu-img info gave no format and virtual size to compare with the inspector's");
  }
  QemuImageInfo result;
  result.format = text_at(info, "format");
  result.virtual_size = size->get<std::uint64_t>();
  result.filename = text_at(info, "filename");
  result.backing_file = text_at(info, "full-backing-filename");
  if (result.backing_file.empty()) result.backing_file = text_at(info, "backing-filename");
  read_format_specific(info, result);
  return result;
}

QemuImageInfo qemu_image_info(const std::filesystem::path& path, const std::string& qemu_format,
                              const std::string& image_label, const InfoLimits& limits) {
  Sandbox sandbox;
  std::string image = sandbox.add_read_only(path, "image");
  Command command{{"qemu-img", "info", "--output=json", "-f", qemu_format, image},
                  limits.resources,
                  limits.timeout,
                  std::move(sandbox)};
  CommandResult result = run(command);
  if (result.timed_out) {
    throw Error(ErrorCode::kSubprocessFailed, "qemu-img info of image " + image_label + " timed out after " +
                                                  std::to_string(limits.timeout.count()) + " ms");
  }
  if (result.exit_code != 0) {
    throw Error(ErrorCode::kImageQemuDisagrees,
                "image " + image_label + " passed the inspector, but qemu-img cannot open it as " + qemu_format +
                    " (exit code " + std::to_string(result.exit_code) + "): " + trimmed(result.err));
  }
  return parse_qemu_image_info(result.out, image_label);
}

void require_agreement(const std::optional<Inspection>& inspection, const QemuImageInfo& qemu,
                       const std::string& qemu_format, const std::string& image_label) {
  std::vector<std::string> differences;
  if (qemu.format != qemu_format) {
    differences.push_back("qemu-img reads it as " + qemu.format + ", not " + qemu_format);
  }
  // qemu's block layer counts whole 512-byte sectors, so it reports a raw
  // file (a kernel, an initrd) that ends mid-sector rounded up: that is the
  // same size, not a disagreement.
  std::uint64_t expected = inspection ? inspection->virtual_size : 0;
  if (qemu_format == "raw") expected = (expected + 511) / 512 * 512;
  if (inspection && qemu.virtual_size != expected) {
    differences.push_back("qemu-img reads a virtual size of " + std::to_string(qemu.virtual_size) +
                          " bytes, the inspector " + std::to_string(inspection->virtual_size));
  }
  if (!qemu.backing_file.empty()) differences.push_back("qemu-img sees a backing file '" + qemu.backing_file + "'");
  if (!qemu.data_file.empty()) differences.push_back("qemu-img sees an external data file '" + qemu.data_file + "'");
  for (const std::string& extent : qemu.extent_files) {
    if (extent != qemu.filename) {
      differences.push_back("qemu-img sees a vmdk extent in another file, '" + extent + "'");
    }
  }
  if (differences.empty()) return;
  std::string sentence = "image " + image_label + " refused: the inspector passed it, but ";
  for (std::size_t i = 0; i < differences.size(); ++i) sentence += (i == 0 ? "" : "; ") + differences[i];
  throw Error(ErrorCode::kImageQemuDisagrees, sentence);
}

QemuImageInfo require_qemu_agrees(const std::filesystem::path& path, const std::optional<Inspection>& inspection,
                                  const std::string& qemu_format, const std::string& image_label,
                                  const InfoLimits& limits) {
  QemuImageInfo qemu = qemu_image_info(path, qemu_format, image_label, limits);
  require_agreement(inspection, qemu, qemu_format, image_label);
  return qemu;
}

}  // namespace kiln::image
