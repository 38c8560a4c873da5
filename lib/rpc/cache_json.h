// The image cache's records as JSON (GET /v1/cache, POST /v1/cache/prune);
// the same fields as `kilnctl cache ls --json`.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "kiln/cache/maintenance.h"

namespace kiln::rpc {

nlohmann::json cache_entry_json(const cache::CacheEntry& entry);
nlohmann::json prune_decisions_json(const std::vector<cache::PruneDecision>& decisions);

}  // namespace kiln::rpc
