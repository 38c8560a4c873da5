#include "kiln/instance/inventory.h"

#include <algorithm>
#include <map>

#include "backing_chain.h"
#include "kiln/instance/instance_dir.h"
#include "kiln/util/error.h"
#include "kiln/util/layout.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

// The disks an instance directory may hold, in the order the guest sees them.
constexpr std::string_view kDiskNames[] = {layout::kRootDisk, layout::kEphemeralDisk, layout::kSwapDisk};

// A domain undefined between the listing and this read (a delete running
// beside a list) is gone, not a libvirt failure: the report keeps no domain.
void add_domain(InstanceReport& report, const virt::Domain& domain) {
  auto state = domain.state_unless_undefined();
  if (!state) return;
  report.domain_name = domain.name();
  report.domain_state = *state;
}

InstanceReport directory_report(const InstanceDir& directory) {
  InstanceReport report;
  report.uuid = directory.uuid();
  report.directory = directory.path();
  std::error_code error;
  report.has_directory = fs::is_directory(directory.path(), error);
  report.provisioning = report.has_directory && fs::exists(directory.provisioning_marker(), error);
  return report;
}

// Instance directories are the ones layout::is_instance_directory_name()
// accepts; _base, locks and anything an operator put there are not instances.
std::vector<std::string> directory_uuids(const fs::path& instances_path) {
  std::vector<std::string> uuids;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory(error) && layout::is_instance_directory_name(name)) uuids.push_back(name);
  }
  return uuids;
}

nlohmann::json layer_json(const ChainLayer& layer) {
  return {{"path", layer.path.string()}, {"format", layer.format}, {"virtual_size", layer.virtual_size},
          {"physical_bytes", layer.physical_bytes}, {"exists", layer.exists}};
}

}  // namespace

InstanceReport show_instance(const std::string& uuid, const fs::path& instances_path, virt::Connection& libvirt) {
  InstanceDir directory(instances_path, uuid);
  InstanceReport report = directory_report(directory);
  if (auto domain = libvirt.lookup_by_uuid(directory.uuid())) add_domain(report, *domain);
  if (!report.has_directory && !report.domain_name) {
    throw Error(ErrorCode::kNotFound, "instance " + directory.uuid() + " has neither a directory under " +
                                          instances_path.string() + " nor a libvirt domain");
  }
  for (std::string_view name : kDiskNames) {
    fs::path path = layout::member(directory.path(), name);
    std::error_code error;
    if (!fs::exists(path, error)) continue;
    BackingChain chain = walk_backing_chain(path, instances_path);
    report.disks.push_back(DiskReport{std::string(name), std::move(chain.layers), std::move(chain.problem)});
  }
  return report;
}

std::vector<InstanceReport> list_instances(const fs::path& instances_path, virt::Connection& libvirt) {
  std::map<std::string, InstanceReport> reports;
  for (const auto& uuid : directory_uuids(instances_path)) {
    reports.emplace(uuid, directory_report(InstanceDir(instances_path, uuid)));
  }
  for (const auto& domain : libvirt.list_domains()) {
    auto it = reports.find(domain.uuid());
    if (it == reports.end()) {
      if (!domain.is_kiln_instance()) continue;
      it = reports.emplace(domain.uuid(), directory_report(InstanceDir(instances_path, domain.uuid()))).first;
    }
    add_domain(it->second, domain);
    if (!it->second.has_directory && !it->second.domain_name) reports.erase(it);  // gone meanwhile
  }
  std::vector<InstanceReport> result;
  result.reserve(reports.size());
  for (auto& [uuid, report] : reports) result.push_back(std::move(report));
  return result;
}

nlohmann::json to_json(const InstanceReport& report) {
  nlohmann::json out = {{"uuid", report.uuid},
                        {"directory", report.has_directory ? nlohmann::json(report.directory.string()) : nullptr},
                        {"provisioning", report.provisioning},
                        {"domain", nullptr}};
  if (report.domain_name) out["domain"] = {{"name", *report.domain_name}, {"state", *report.domain_state}};
  if (!report.disks.empty()) {
    out["disks"] = nlohmann::json::array();
    for (const auto& disk : report.disks) {
      nlohmann::json chain = nlohmann::json::array();
      for (const auto& layer : disk.chain) chain.push_back(layer_json(layer));
      out["disks"].push_back({{"name", disk.name}, {"backing_chain", chain},
                              {"problem", disk.problem.empty() ? nlohmann::json(nullptr) : nlohmann::json(disk.problem)}});
    }
  }
  return out;
}

}  // namespace kiln::instance
