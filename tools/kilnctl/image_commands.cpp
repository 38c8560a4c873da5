// kilnctl image inspect: the operator's safe `qemu-img info`. The file is
// read natively (headers only); a backing or data file it names is reported,
// never opened.
#include <sstream>

#include "commands.h"
#include "kiln/image/inspector.h"

namespace kilnctl {

namespace {

using nlohmann::json;

json inspection_json(const kiln::image::Inspection& inspection) {
  json refusals = json::array();
  for (const auto& finding : inspection.refusals) {
    refusals.push_back({{"rule", finding.rule}, {"code", kiln::code_name(finding.code)}, {"reason", finding.sentence}});
  }
  json out = {{"format", inspection.format}, {"virtual_size", inspection.virtual_size},
              {"matched_formats", inspection.matched_formats}, {"safe", inspection.safe()},
              {"refusals", refusals}};
  if (inspection.cluster_size) out["cluster_size"] = *inspection.cluster_size;
  if (!inspection.backing_file.empty()) out["backing_file"] = inspection.backing_file;
  if (!inspection.data_file.empty()) out["data_file"] = inspection.data_file;
  if (!inspection.vmdk_create_type.empty()) out["vmdk_create_type"] = inspection.vmdk_create_type;
  return out;
}

std::string inspection_text(const std::string& file, const kiln::image::Inspection& inspection) {
  std::ostringstream out;
  out << "file:          " << file << "\n"
      << "format:        " << inspection.format << "\n"
      << "virtual size:  " << human_bytes(inspection.virtual_size) << " (" << inspection.virtual_size << " bytes)\n";
  if (inspection.cluster_size) out << "cluster size:  " << *inspection.cluster_size << "\n";
  if (!inspection.backing_file.empty()) out << "backing file:  " << inspection.backing_file << " (not opened)\n";
  if (!inspection.data_file.empty()) out << "data file:     " << inspection.data_file << " (not opened)\n";
  if (!inspection.vmdk_create_type.empty()) out << "vmdk type:     " << inspection.vmdk_create_type << "\n";
  out << "verdict:       " << (inspection.safe() ? "safe" : "REFUSED") << "\n";
  for (const auto& finding : inspection.refusals) out << "  - [" << finding.rule << "] " << finding.sentence << "\n";
  return out.str();
}

}  // namespace

void add_image_commands(CLI::App& app, Registry& registry) {
  CLI::App* group = app.add_subcommand("image", "look at image files");
  group->require_subcommand(1);
  auto file = std::make_shared<std::string>();
  auto disk_format = std::make_shared<std::string>();
  CLI::App* inspect = group->add_subcommand("inspect", "format, sizes, referenced files and the safety verdict");
  inspect->add_option("file", *file, "image file")->required();
  inspect->add_option("--disk-format", *disk_format, "also check the content against this Glance disk_format");
  registry.emplace_back(inspect, [file, disk_format](Context& context) {
    auto inspection = kiln::image::inspect_file(*file, context.settings().cache.inspector);
    if (!disk_format->empty() && !kiln::image::disk_format_accepts(*disk_format, inspection.format)) {
      inspection.refusals.push_back({"format_mismatch",
                                     "the content is " + inspection.format + ", not " + *disk_format,
                                     kiln::ErrorCode::kImageFormatMismatch});
    }
    context.print(inspection_json(inspection), inspection_text(*file, inspection));
    return inspection.safe() ? 0 : 4;
  });
}

}  // namespace kilnctl
