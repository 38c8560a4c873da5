#include "kiln/instance/inventory.h"

#include <algorithm>
#include <map>

#include "backing_chain.h"
#include "kiln/instance/instance_dir.h"
#include "kiln/instance/provision.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/util/error.h"
#include "kiln/util/layout.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

// A domain undefined between the listing and this read (a delete running
// beside a list) is gone, not a libvirt failure: the report keeps no domain.
void add_domain(InstanceReport& report, const virt::Domain& domain) {
  auto state = domain.state_unless_undefined();
  if (!state) return;
  report.domain_name = domain.name();
  report.domain_state = *state;
  report.display_name = domain.title();
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

// The same keys as a file's layer, "rbd" (pool/image@snapshot) for "path":
// an RBD layer is raw, and physical_bytes are what Ceph stores for it alone
// (null, with "unreadable", when its pool could not be read).
nlohmann::json layer_json(const rbd::ChainLayer& layer) {
  nlohmann::json out = {{"rbd", layer.spec()}, {"format", "raw"}, {"virtual_size", layer.virtual_size},
                        {"physical_bytes", layer.used_bytes ? nlohmann::json(*layer.used_bytes) : nlohmann::json(nullptr)},
                        {"exists", layer.unreadable.empty()}};
  if (!layer.unreadable.empty()) out["unreadable"] = layer.unreadable;
  return out;
}

}  // namespace

void require_instances_path(const fs::path& instances_path) {
  auto refuse = [&](const std::string& why) {
    throw Error(ErrorCode::kNotAnInstancesPath, instances_path.string() + " is not a kiln instances path: " + why);
  };
  std::error_code error;
  auto status = fs::status(instances_path, error);
  if (status.type() == fs::file_type::not_found) refuse("it does not exist");
  if (error) refuse(error.message());
  if (!fs::is_directory(status)) refuse("it is not a directory");
  bool empty = true;
  fs::directory_iterator entries(instances_path, error);
  if (error) refuse(error.message());
  for (const auto& entry : entries) {
    empty = false;
    std::string name = entry.path().filename().string();
    if (name == layout::kBaseDirectory || name == layout::kLockDirectory || name == layout::kOperationJournal) return;
    if (layout::is_instance_directory_name(name) && entry.is_directory(error)) return;
  }
  if (!empty) refuse("it holds neither _base, locks, operations.log nor an instance directory");
}

namespace {

void add_disks(InstanceReport& report, const InstanceDir& directory, const fs::path& instances_path) {
  for (std::string_view name : layout::kInstanceDisks) {
    fs::path path = layout::member(directory.path(), name);
    std::error_code error;
    if (!fs::exists(path, error)) continue;
    BackingChain chain = walk_backing_chain(path, instances_path);
    report.disks.push_back(DiskReport{std::string(name), std::move(chain.layers), {}, std::move(chain.problem)});
  }
}

// The instance's images in the pool, as nova names them; a disk may be in
// both places only after images_type changed under a live instance.
void add_rbd_disks(InstanceReport& report, const RbdHost& rbd) {
  rbd::Pool pool = rbd.cluster->open_pool(rbd.pool);
  for (std::string_view name : layout::kInstanceDisks) {
    std::string image = rbd::instance_image_name(report.uuid, name);
    try {
      report.disks.push_back(DiskReport{std::string(name), {}, rbd::image_chain(*rbd.cluster, pool, image), ""});
    } catch (const Error& error) {
      if (error.code() != ErrorCode::kNotFound) throw;  // no such disk, or removed meanwhile
    }
  }
}

}  // namespace

InstanceReport show_instance(const std::string& uuid, const fs::path& instances_path, virt::Connection& libvirt,
                             const RbdHost* rbd) {
  InstanceDir directory(instances_path, uuid);
  InstanceReport report = directory_report(directory);
  if (auto domain = libvirt.lookup_by_uuid(directory.uuid())) add_domain(report, *domain);
  add_disks(report, directory, instances_path);
  if (rbd) add_rbd_disks(report, *rbd);
  if (!report.has_directory && !report.domain_name && report.disks.empty()) {
    throw Error(ErrorCode::kNotFound, "instance " + directory.uuid() + " has neither a directory under " +
                                          instances_path.string() + " nor a libvirt domain" +
                                          (rbd ? " nor an RBD image in pool " + rbd->pool : ""));
  }
  return report;
}

InstanceReport show_instance_without_libvirt(const std::string& uuid, const fs::path& instances_path,
                                             const std::string& why, const RbdHost* rbd) {
  InstanceDir directory(instances_path, uuid);
  InstanceReport report = directory_report(directory);
  report.libvirt_unreachable = why;
  add_disks(report, directory, instances_path);
  if (rbd) add_rbd_disks(report, *rbd);
  if (!report.has_directory && report.disks.empty()) {
    throw Error(ErrorCode::kNotFound, "instance " + directory.uuid() + " has no directory under " +
                                          instances_path.string() + " (libvirt, unreachable, was not asked: " + why + ")");
  }
  return report;
}

std::vector<InstanceReport> list_instances_without_libvirt(const fs::path& instances_path, const std::string& why) {
  std::vector<InstanceReport> reports;
  for (const auto& uuid : directory_uuids(instances_path)) {
    reports.push_back(directory_report(InstanceDir(instances_path, uuid)));
    reports.back().libvirt_unreachable = why;
  }
  std::sort(reports.begin(), reports.end(), [](const auto& a, const auto& b) { return a.uuid < b.uuid; });
  return reports;
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

std::vector<InstanceReport> survey_instances(const fs::path& instances_path, const ConnectLibvirt& connect) {
  try {
    return list_instances(instances_path, connect());
  } catch (const Error& error) {
    if (error.code() != ErrorCode::kLibvirtError) throw;
    return list_instances_without_libvirt(instances_path, error.what());
  }
}

InstanceReport survey_instance(const std::string& uuid, const fs::path& instances_path,
                               const ConnectLibvirt& connect, const RbdHost* rbd) {
  try {
    return show_instance(uuid, instances_path, connect(), rbd);
  } catch (const Error& error) {
    if (error.code() != ErrorCode::kLibvirtError) throw;
    return show_instance_without_libvirt(uuid, instances_path, error.what(), rbd);
  }
}

nlohmann::json to_json(const InstanceReport& report) {
  nlohmann::json out = {{"uuid", report.uuid},
                        {"directory", report.has_directory ? nlohmann::json(report.directory.string()) : nullptr},
                        {"provisioning", report.provisioning},
                        {"domain", nullptr}};
  if (report.domain_name) {
    out["domain"] = {{"name", *report.domain_name},
                     {"state", *report.domain_state},
                     {"title", report.display_name ? nlohmann::json(*report.display_name) : nlohmann::json(nullptr)}};
  }
  if (report.libvirt_unreachable) out["libvirt_unreachable"] = *report.libvirt_unreachable;
  if (report.rbd_unreachable) out["rbd_unreachable"] = *report.rbd_unreachable;
  if (!report.disks.empty()) {
    out["disks"] = nlohmann::json::array();
    for (const auto& disk : report.disks) {
      nlohmann::json chain = nlohmann::json::array();
      for (const auto& layer : disk.chain) chain.push_back(layer_json(layer));
      for (const auto& layer : disk.rbd_chain) chain.push_back(layer_json(layer));
      out["disks"].push_back({{"name", disk.name}, {"storage", disk.rbd_chain.empty() ? "file" : "rbd"},
                              {"backing_chain", chain},
                              {"problem", disk.problem.empty() ? nlohmann::json(nullptr) : nlohmann::json(disk.problem)}});
    }
  }
  return out;
}

}  // namespace kiln::instance
