// kilnctl cache ls / fetch / verify / prune / repair. ls, verify and
// prune --dry-run change nothing on disk; only repair and a real prune clean
// up what a crash left (kilnd does too, at start). With images_type = rbd,
// ls and prune also cover the pool bases (kiln/rbd/pool_base.h).
#include <algorithm>
#include <iomanip>
#include <sstream>

#include "agent_route.h"
#include "commands.h"
#include "kiln/cache/maintenance.h"
#include "kiln/rpc/steps.h"
#include "kiln/rpc/wire.h"
#include "progress.h"
#include "kiln/util/text.h"

namespace kilnctl {

namespace {

using nlohmann::json;
namespace cache = kiln::cache;

std::string age_text(cache::Clock::time_point when) {
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(cache::Clock::now() - when).count();
  if (seconds < 120) return std::to_string(seconds) + " s ago";
  if (seconds < 7200) return std::to_string(seconds / 60) + " min ago";
  if (seconds < 172800) return std::to_string(seconds / 3600) + " h ago";
  return std::to_string(seconds / 86400) + " d ago";
}

std::string entries_text(const std::vector<cache::CacheEntry>& entries) {
  std::ostringstream out;
  out << std::left << std::setw(38) << "IMAGE / BASE" << std::setw(20) << "NAME" << std::setw(11) << "PHYSICAL"
      << std::setw(11) << "VIRTUAL" << std::setw(7) << "USERS" << std::setw(14) << "LAST USED" << "STATE\n";
  std::uint64_t physical = 0;
  for (const auto& entry : entries) {
    std::string id = entry.info ? entry.info->image_id : entry.name;
    // Glance's name, escaped: a newline would forge a row, ESC sequences drive the terminal.
    std::string name = entry.info ? kiln::printable(entry.info->name) : cache::kind_name(entry.kind);
    std::size_t cut = std::min<std::size_t>(name.size(), 19);
    while (cut > 0 && cut < name.size() && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
    out << std::setw(38) << id << std::setw(20) << name.substr(0, cut) << std::setw(11)
        << human_bytes(entry.physical_bytes) << std::setw(11) << human_bytes(entry.virtual_bytes) << std::setw(7)
        << entry.users.size() << std::setw(14) << age_text(entry.last_used)
        << (entry.kind == cache::BaseKind::kImage && !entry.info ? "no-info" : "ok") << "\n";
    physical += entry.physical_bytes;
  }
  out << entries.size() << " base(s), " << human_bytes(physical) << " on disk\n";
  return out.str();
}

std::string pool_bases_text(const std::vector<kiln::rbd::PoolBaseInfo>& bases) {
  std::ostringstream out;
  out << "\n" << std::left << std::setw(52) << "POOL BASE" << std::setw(38) << "IMAGE / KIND" << std::setw(11)
      << "VIRTUAL" << std::setw(22) << "IMPORTED" << "CLONES\n";
  std::size_t in_use = 0;
  for (const auto& base : bases) {
    std::string imported = base.imported_at ? age_text(*base.imported_at) : "unknown";
    // Names and metadata from the pool, escaped as Glance's names are (anyone with write access can set them).
    out << std::setw(52) << kiln::printable(base.pool + "/" + base.name) << std::setw(38)
        << (base.image_id.empty() ? base.kind : kiln::printable(base.image_id)) << std::setw(11)
        << human_bytes(base.size_bytes) << std::setw(22) << imported << base.clones.size()
        << (base.in_use() ? " (in use)" : "") << "\n";
    if (base.in_use()) ++in_use;
  }
  out << bases.size() << " pool base(s), " << in_use << " in use\n";
  return out.str();
}

void repair_quietly(Context& context) { cache::repair_cache(context.instances_path(), context.settings().cache); }

void add_ls(CLI::App& group, Registry& registry) {
  CLI::App* command = group.add_subcommand(
      "ls", "one row per base: image, sizes, users, last use, state (and the pool bases with images_type = rbd)");
  registry.emplace_back(command, [](Context& context) {
    auto entries = cache::list_cache(context.instances_path());
    auto pool_bases = kiln::rpc::list_pool_bases(context.settings());
    context.print(kiln::rpc::cache_list_json(entries, pool_bases),
                  entries_text(entries) + (pool_bases ? pool_bases_text(*pool_bases) : ""));
    return 0;
  });
}

void add_fetch(CLI::App& group, Registry& registry) {
  auto image_id = std::make_shared<std::string>();
  CLI::App* command = group.add_subcommand("fetch", "pre-cache an image: the same path as a boot");
  command->add_option("image", *image_id, "Glance image id")->required();
  registry.emplace_back(command, [image_id](Context& context) {
    set_subject("", *image_id);
    if (const auto* agent = context.agent()) {
      json result = run_through_agent(*agent, "POST", "/v1/images/" + *image_id + "/cache", std::nullopt,
                                      context.json_output() ? "" : *image_id);
      context.print(result, "image " + *image_id + ": " + result.value("path", std::string()) + ", cached by kilnd\n");
      return 0;
    }
    // The steps kilnd's operation takes (kiln/rpc/steps.h).
    auto base = *kiln::rpc::fetch_base(context.cache(), *image_id, std::nullopt, std::nullopt,
                                       direct_hooks(context.json_output() ? nullptr : progress_reporter(*image_id)));
    finish_progress();
    context.print(json(base),
                  "image " + base.record.id + " (" + kiln::printable(base.record.name) + "): " + base.path.string() + ", " +
                      (base.downloaded_bytes > 0 ? "downloaded " + human_bytes(base.downloaded_bytes)
                                                 : std::string("already cached")) + "\n");
    return 0;
  });
}

void add_verify(CLI::App& group, Registry& registry) {
  CLI::App* command = group.add_subcommand("verify", "re-hash every image base against its .info");
  registry.emplace_back(command, [](Context& context) {
    auto results = cache::verify_cache(context.instances_path());
    std::ostringstream text;
    bool rotted = false;
    for (const auto& r : results) {
      text << r.name << "  " << r.state << "\n";
      rotted = rotted || r.state == "rotted";
    }
    text << results.size() << " image base(s) checked" << (rotted ? ", some ROTTED" : "") << "\n";
    context.print(json(results), text.str());
    return rotted ? 3 : 0;
  });
}

// From the wire form, which both paths have: kilnd answers with it.
std::string prune_text(const json& answer) {
  bool dry_run = answer.value("dry_run", false);
  std::ostringstream text;
  for (const auto& d : answer.value("decisions", json::array())) {
    bool removed = d.value("removed", false);
    text << (removed ? "removed " : dry_run ? "would remove " : "kept (busy or in use) ") << d.value("name", "")
         << " (" << human_bytes(d.value("physical_bytes", std::uint64_t{0})) << "): " << d.value("reason", "") << "\n";
  }
  for (const auto& d : answer.value("pool_decisions", json::array())) {
    bool removed = d.value("removed", false);
    std::string kept = d.value("kept", "");
    text << (removed ? "removed " : dry_run ? "would remove " : "kept ")
         << kiln::printable(d.value("pool", "") + "/" + d.value("name", "")) << " (" << human_bytes(d.value("virtual_bytes", std::uint64_t{0})) << " virtual): "
         << d.value("reason", "") << (kept.empty() ? "" : "; kept: " + kept) << "\n";
  }
  if (answer.value("decisions", json::array()).empty() && answer.value("pool_decisions", json::array()).empty()) {
    text << "nothing to prune\n";
  }
  return text.str();
}

void add_prune(CLI::App& group, Registry& registry) {
  auto dry_run = std::make_shared<bool>(false);
  CLI::App* command = group.add_subcommand(
      "prune", "remove unused bases past their age or over the budget (and old pool bases without clones with rbd)");
  command->add_flag("--dry-run", *dry_run, "say what would go, remove nothing");
  registry.emplace_back(command, [dry_run](Context& context) {
    json answer;
    if (const auto* agent = context.agent()) {
      answer = run_through_agent(*agent, "POST", "/v1/cache/prune", json{{"dry_run", *dry_run}}, "");
    } else {
      // The pool first, as kilnd does: a cluster that cannot be reached fails the prune before _base is touched.
      auto pool_decisions = kiln::rpc::prune_pool_bases(context.settings(), cache::Clock::now(), *dry_run);
      if (!*dry_run) repair_quietly(context);
      answer = kiln::rpc::prune_json(*dry_run,
                                     cache::prune_cache(context.instances_path(), context.settings().cache,
                                                        cache::Clock::now(), *dry_run),
                                     pool_decisions);
    }
    context.print(answer, prune_text(answer));
    return 0;
  });
}

void add_repair(CLI::App& group, Registry& registry) {
  CLI::App* command = group.add_subcommand("repair", "remove what a crash left behind");
  registry.emplace_back(command, [](Context& context) {
    auto actions = cache::repair_cache(context.instances_path(), context.settings().cache);
    std::ostringstream text;
    for (const auto& a : actions) {
      text << a.action << ": " << a.path.string() << "\n";
    }
    if (actions.empty()) text << "nothing to repair\n";
    context.print(json(actions), text.str());
    return 0;
  });
}

}  // namespace

void add_cache_commands(CLI::App& app, Registry& registry) {
  CLI::App* group = app.add_subcommand("cache", "the _base image cache");
  group->require_subcommand(1);
  add_ls(*group, registry);
  add_fetch(*group, registry);
  add_verify(*group, registry);
  add_prune(*group, registry);
  add_repair(*group, registry);
}

}  // namespace kilnctl
