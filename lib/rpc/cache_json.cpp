#include "cache_json.h"

namespace kiln::rpc {

nlohmann::json cache_entry_json(const cache::CacheEntry& entry) {
  bool missing_info = entry.kind == cache::BaseKind::kImage && !entry.info;
  nlohmann::json out = {{"name", entry.name},
                        {"path", entry.path.string()},
                        {"kind", cache::kind_name(entry.kind)},
                        {"physical_bytes", entry.physical_bytes},
                        {"virtual_bytes", entry.virtual_bytes},
                        {"in_use", entry.users.size()},
                        {"last_used_at", cache::format_time(entry.last_used)},
                        {"state", missing_info ? "no-info" : "ok"}};
  if (entry.info) {
    out["image_id"] = entry.info->image_id;
    out["image_name"] = entry.info->name;
    out["disk_format"] = entry.info->disk_format;
    out["fetched_at"] = cache::format_time(entry.info->fetched_at);
  }
  nlohmann::json users = nlohmann::json::array();
  for (const auto& user : entry.users) users.push_back(user.string());
  out["users"] = users;
  return out;
}

nlohmann::json prune_decisions_json(const std::vector<cache::PruneDecision>& decisions) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : decisions) {
    out.push_back({{"name", d.name}, {"path", d.path.string()}, {"physical_bytes", d.physical_bytes},
                   {"reason", d.reason}, {"removed", d.removed}});
  }
  return out;
}

}  // namespace kiln::rpc
