#include "kiln/instance/disk_usage.h"

#include <map>
#include <set>

#include "backing_chain.h"
#include "kiln/cache/maintenance.h"
#include "kiln/instance/provision.h"
#include "kiln/rbd/image_chain.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/rbd/pool_base.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

std::uint64_t tree_bytes(const fs::path& root) {
  std::uint64_t total = allocated_bytes(root);
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, error);
       !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    total += allocated_bytes(it->path());
  }
  return total;
}

// Base name -> the instance directories (uuids) backed by it.
std::map<std::string, std::set<std::string>> users_by_base(const std::vector<cache::CacheEntry>& entries) {
  std::map<std::string, std::set<std::string>> users;
  for (const auto& entry : entries) {
    auto& uuids = users[entry.name];
    for (const auto& disk : entry.users) uuids.insert(disk.parent_path().filename().string());
  }
  return users;
}

// The instance a pool image belongs to: "<pool>/<uuid>_<disk>" -> uuid.
std::string clone_owner(const std::string& clone) {
  std::string image = clone.substr(clone.find('/') + 1);
  return image.substr(0, image.find('_'));
}

void add_pool_usage(DiskUsage& usage, std::map<std::string, InstanceUsage>& instances, const RbdHost& rbd) {
  rbd::Pool pool = rbd.cluster->open_pool(rbd.pool);
  usage.pool = rbd.pool;
  for (auto& [uuid, instance] : instances) {
    for (std::string_view disk : layout::kInstanceDisks) {
      try {
        instance.rbd_bytes += rbd::stored_bytes(pool, rbd::instance_image_name(uuid, disk), "");
      } catch (const Error& error) {
        if (error.code() != ErrorCode::kNotFound) throw;  // no such disk (a file disk, or no swap)
      }
    }
    instance.freed_by_deleting += instance.rbd_bytes;
    usage.pool_instances_bytes += instance.rbd_bytes;
  }
  for (const rbd::PoolBaseInfo& info : rbd::list_pool_bases(pool)) {
    PoolBaseUsage base{info.name, info.kind, 0, info.clones.size(), 0};
    try {
      base.bytes = rbd::stored_bytes(pool, info.name, std::string(rbd::kPoolBaseSnapshot));
    } catch (const Error& error) {
      if (error.code() != ErrorCode::kNotFound) throw;
      continue;  // removed since the listing (a prune on another host)
    }
    if (info.clones.empty()) base.freed_by_deleting = base.bytes;
    std::set<std::string> owners;
    for (const auto& clone : info.clones) owners.insert(clone_owner(clone));
    for (const auto& owner : owners) {
      auto it = instances.find(owner);
      if (it == instances.end()) continue;  // an instance of another host
      it->second.pool_bases.push_back(info.name);
      if (owners.size() == 1) it->second.freed_by_deleting += base.bytes;
    }
    usage.pool_bases_bytes += base.bytes;
    usage.pool_bases.push_back(std::move(base));
  }
}

}  // namespace

DiskUsage disk_usage(const fs::path& instances_path, const RbdHost* rbd) {
  DiskUsage usage;
  auto entries = cache::list_cache(instances_path);
  auto users = users_by_base(entries);
  std::map<std::string, InstanceUsage> instances;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory(error) || !layout::is_instance_directory_name(name)) continue;
    InstanceUsage& instance = instances[name];
    instance.uuid = name;
    instance.own_bytes = tree_bytes(entry.path());
    instance.freed_by_deleting = instance.own_bytes;
    usage.instances_bytes += instance.own_bytes;
  }
  for (const auto& entry : entries) {
    const auto& uuids = users[entry.name];
    BaseUsage base{entry.name, cache::kind_name(entry.kind), entry.physical_bytes, uuids.size(), 0, 0};
    if (uuids.size() > 1) base.shared_bytes = base.bytes;
    if (uuids.empty()) base.freed_by_deleting = base.bytes;
    for (const auto& uuid : uuids) {
      auto it = instances.find(uuid);
      if (it == instances.end()) continue;
      it->second.bases.push_back(entry.name);
      it->second.backing_bytes += base.bytes;
      if (uuids.size() == 1) it->second.freed_by_deleting += base.bytes;
    }
    usage.bases_bytes += base.bytes;
    usage.bases.push_back(std::move(base));
  }
  if (rbd) add_pool_usage(usage, instances, *rbd);
  for (auto& [uuid, instance] : instances) usage.instances.push_back(std::move(instance));
  usage.total_bytes = tree_bytes(instances_path);
  usage.other_bytes = usage.total_bytes - std::min(usage.total_bytes, usage.instances_bytes + usage.bases_bytes);
  usage.filesystem_available = available_bytes(instances_path);
  return usage;
}

nlohmann::json to_json(const DiskUsage& usage) {
  nlohmann::json instances = nlohmann::json::array();
  for (const auto& instance : usage.instances) {
    instances.push_back({{"uuid", instance.uuid}, {"own_bytes", instance.own_bytes},
                         {"backing_bytes", instance.backing_bytes}, {"freed_by_deleting", instance.freed_by_deleting},
                         {"bases", instance.bases}});
    if (usage.pool) {
      instances.back()["rbd_bytes"] = instance.rbd_bytes;
      instances.back()["pool_bases"] = instance.pool_bases;
    }
  }
  nlohmann::json bases = nlohmann::json::array();
  for (const auto& base : usage.bases) {
    bases.push_back({{"name", base.name}, {"kind", base.kind}, {"bytes", base.bytes}, {"users", base.users},
                     {"shared_bytes", base.shared_bytes}, {"freed_by_deleting", base.freed_by_deleting}});
  }
  nlohmann::json out = {{"instances", instances}, {"bases", bases},
                        {"totals", {{"instances_bytes", usage.instances_bytes}, {"bases_bytes", usage.bases_bytes},
                                    {"other_bytes", usage.other_bytes}, {"total_bytes", usage.total_bytes},
                                    {"filesystem_available", usage.filesystem_available}}}};
  if (usage.rbd_unreachable) out["rbd_unreachable"] = *usage.rbd_unreachable;
  if (!usage.pool) return out;
  nlohmann::json pool_bases = nlohmann::json::array();
  for (const auto& base : usage.pool_bases) {
    pool_bases.push_back({{"name", base.name}, {"kind", base.kind}, {"bytes", base.bytes}, {"clones", base.clones},
                          {"freed_by_deleting", base.freed_by_deleting}});
  }
  out["pool"] = {{"name", *usage.pool}, {"bases", pool_bases},
                 {"totals", {{"instances_bytes", usage.pool_instances_bytes}, {"bases_bytes", usage.pool_bases_bytes}}}};
  return out;
}

}  // namespace kiln::instance
