// kilnctl instance list|show|recover|reconcile and kilnctl du: the operator's
// view of what is on the host, and the repairs after a crash or a reinstall.
#include <sstream>

#include "commands.h"
#include "kiln/instance/disk_usage.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/reconcile.h"
#include "kiln/rpc/steps.h"
#include "kiln/rpc/wire.h"
#include "kiln/util/text.h"

namespace kilnctl {

namespace {

using nlohmann::json;

// The display name came from a request: escaped, so it cannot forge a line.
std::string domain_text(const kiln::instance::InstanceReport& report) {
  if (report.libvirt_unreachable) return "domain unknown (libvirt unreachable)";
  if (!report.domain_name) return "no domain";
  std::string text = *report.domain_name + " (" + *report.domain_state + ")";
  if (report.display_name) text += "  \"" + kiln::printable(*report.display_name) + "\"";
  return text;
}

std::string list_text(const std::vector<kiln::instance::InstanceReport>& reports) {
  std::ostringstream out;
  if (!reports.empty() && reports.front().libvirt_unreachable) {
    out << "libvirt unreachable: " << *reports.front().libvirt_unreachable << "\n";
  }
  if (reports.empty()) out << "no instances\n";
  for (const auto& report : reports) {
    out << report.uuid << "  " << domain_text(report)
        << (report.has_directory ? "" : "  [no directory]") << (report.provisioning ? "  [half-built]" : "")
        << "\n";
  }
  return out.str();
}

// An RBD disk's clone chain: the bytes each layer holds in Ceph itself.
void rbd_chain_text(std::ostringstream& out, const std::vector<kiln::rbd::ChainLayer>& chain) {
  for (std::size_t depth = 0; depth < chain.size(); ++depth) {
    const auto& layer = chain[depth];
    out << std::string(4 + 2 * depth, ' ') << (depth == 0 ? "rbd " : "cloned from ") << layer.spec() << ": ";
    if (!layer.used_bytes) {
      out << "UNREADABLE: " << layer.unreadable << "\n";
    } else {
      out << human_bytes(layer.virtual_size) << " virtual, " << human_bytes(*layer.used_bytes) << " stored\n";
    }
  }
}

std::string show_text(const kiln::instance::InstanceReport& report) {
  std::ostringstream out;
  if (report.libvirt_unreachable) out << "libvirt unreachable: " << *report.libvirt_unreachable << "\n";
  if (report.rbd_unreachable) out << "Ceph unreachable, RBD disks not read: " << *report.rbd_unreachable << "\n";
  out << "instance " << report.uuid << ": " << domain_text(report) << "\n"
      << "  directory  " << (report.has_directory ? report.directory.string() : "(missing)")
      << (report.provisioning ? " [half-built: provisioning marker present]" : "") << "\n";
  for (const auto& disk : report.disks) {
    out << "  " << disk.name << "\n";
    for (std::size_t depth = 0; depth < disk.chain.size(); ++depth) {
      const auto& layer = disk.chain[depth];
      out << std::string(4 + 2 * depth, ' ') << (depth == 0 ? "" : "backed by ") << layer.path.string() << ": ";
      if (!layer.exists) {
        out << "MISSING\n";
      } else {
        out << layer.format << ", " << human_bytes(layer.virtual_size) << " virtual, "
            << human_bytes(layer.physical_bytes) << " on disk\n";
      }
    }
    rbd_chain_text(out, disk.rbd_chain);
    if (!disk.problem.empty()) out << "    PROBLEM: " << disk.problem << "\n";
  }
  return out.str();
}

std::string reconcile_text(const kiln::instance::ReconcileReport& report, bool dry_run) {
  std::ostringstream out;
  out << report.instances_seen << " instance(s) seen" << (dry_run ? " (dry run: nothing changed)" : "") << "\n";
  if (report.findings.empty()) out << "directories and libvirt agree\n";
  for (const auto& finding : report.findings) {
    out << finding.uuid << "  " << finding.kind << ": " << finding.action << "\n";
  }
  for (const auto& repair : report.cache_repairs) out << repair.path.string() << ": " << repair.action << "\n";
  return out.str();
}

// images_type = rbd: the bytes in Ceph, apart from the filesystem's.
void pool_usage_text(std::ostringstream& out, const kiln::instance::DiskUsage& usage) {
  char line[256];
  out << "\nIN POOL " << *usage.pool << " (as rbd du counts, before replication)\n"
      << "INSTANCE                               IN POOL     POOL BASES\n";
  for (const auto& instance : usage.instances) {
    std::string bases;
    for (const auto& base : instance.pool_bases) bases += (bases.empty() ? "" : ", ") + base;
    std::snprintf(line, sizeof line, "%-38s %-11s %s\n", instance.uuid.c_str(), human_bytes(instance.rbd_bytes).c_str(),
                  bases.empty() ? "-" : bases.c_str());
    out << line;
  }
  out << "\nPOOL BASE                                                  KIND       STORED      CLONES FREED IF DELETED\n";
  for (const auto& base : usage.pool_bases) {
    std::snprintf(line, sizeof line, "%-58s %-10s %-11s %-6zu %s\n", base.name.c_str(), base.kind.c_str(),
                  human_bytes(base.bytes).c_str(), base.clones, human_bytes(base.freed_by_deleting).c_str());
    out << line;
  }
  out << "\npool: instances " << human_bytes(usage.pool_instances_bytes) << ", bases "
      << human_bytes(usage.pool_bases_bytes) << "\n";
}

std::string du_text(const kiln::instance::DiskUsage& usage) {
  std::ostringstream out;
  out << "INSTANCE                               OWN         BASES       FREED IF DELETED\n";
  char line[256];
  for (const auto& instance : usage.instances) {
    std::snprintf(line, sizeof line, "%-38s %-11s %-11s %s\n", instance.uuid.c_str(),
                  human_bytes(instance.own_bytes).c_str(), human_bytes(instance.backing_bytes).c_str(),
                  human_bytes(instance.freed_by_deleting).c_str());
    out << line;
  }
  out << "\nBASE                                             KIND       ON DISK     USERS  SHARED      FREED IF DELETED\n";
  for (const auto& base : usage.bases) {
    std::snprintf(line, sizeof line, "%-48s %-10s %-11s %-6zu %-11s %s\n", base.name.c_str(), base.kind.c_str(),
                  human_bytes(base.bytes).c_str(), base.users, human_bytes(base.shared_bytes).c_str(),
                  human_bytes(base.freed_by_deleting).c_str());
    out << line;
  }
  out << "\ninstances " << human_bytes(usage.instances_bytes) << ", bases " << human_bytes(usage.bases_bytes)
      << ", other " << human_bytes(usage.other_bytes) << "; total " << human_bytes(usage.total_bytes)
      << " (filesystem has " << human_bytes(usage.filesystem_available) << " available)\n";
  if (usage.rbd_unreachable) out << "\nCeph unreachable, pool not read: " << *usage.rbd_unreachable << "\n";
  if (usage.pool) pool_usage_text(out, usage);
  return out.str();
}

}  // namespace

void add_inventory_commands(CLI::App& app, Registry& registry) {
  CLI::App* instance = app.add_subcommand("instance", "inspect, recover and reconcile instances");
  instance->require_subcommand(1);

  CLI::App* list = instance->add_subcommand("list", "every instance: directories and kiln's libvirt domains");
  registry.emplace_back(list, [](Context& context) {
    // Degrades: with libvirt down the directories are still worth showing.
    auto reports = kiln::instance::survey_instances(context.instances_path(),
                                                    [&]() -> kiln::virt::Connection& { return context.libvirt(); });
    context.print(kiln::rpc::instance_list_json(reports), list_text(reports));
    return 0;
  });

  auto show_uuid = std::make_shared<std::string>();
  CLI::App* show = instance->add_subcommand("show", "an instance's disks, backing chains, sizes and libvirt state");
  show->add_option("uuid", *show_uuid, "instance uuid")->required();
  registry.emplace_back(show, [show_uuid](Context& context) {
    set_subject(*show_uuid);
    auto report = kiln::rpc::show_instance(context.settings(), *show_uuid, context.instances_path(),
                                           [&]() -> kiln::virt::Connection& { return context.libvirt(); });
    context.print(kiln::instance::to_json(report), show_text(report));
    return 0;
  });

  struct RecoverOptions {
    std::string uuid;
    bool no_start = false;
  };
  auto recover = std::make_shared<RecoverOptions>();
  CLI::App* recover_command =
      instance->add_subcommand("recover", "re-define an instance's domain from its directory's libvirt.xml");
  recover_command->add_option("uuid", recover->uuid, "instance uuid")->required();
  recover_command->add_flag("--no-start", recover->no_start, "define the domain but do not start it");
  registry.emplace_back(recover_command, [recover](Context& context) {
    set_subject(recover->uuid);
    const auto& instances_path = context.instances_path();  // checked before libvirt is asked
    auto rbd = kiln::rpc::rbd_host(context.settings());  // images_type = rbd: its disks are checked in the pool
    auto result = kiln::instance::recover_instance(recover->uuid, instances_path, context.libvirt(),
                                                   !recover->no_start, rbd ? &*rbd : nullptr);
    std::string text = "instance " + result.uuid + ": domain " + result.domain_name + " " + result.domain_state +
                       (result.already_defined ? " (libvirt already had it; nothing re-defined)" : " (re-defined from libvirt.xml)") +
                       "\n";
    context.print(json(result), text);
    return 0;
  });

  auto dry_run = std::make_shared<bool>(false);
  CLI::App* reconcile = instance->add_subcommand(
      "reconcile", "compare directories with libvirt; remove half-built directories, report the rest");
  reconcile->add_flag("--dry-run", *dry_run, "report what would be done, change nothing");
  registry.emplace_back(reconcile, [dry_run](Context& context) {
    const auto& instances_path = context.instances_path();  // checked before libvirt is asked
    auto report = kiln::rpc::reconcile(context.settings(), instances_path, context.libvirt(), *dry_run);
    context.print(kiln::instance::to_json(report), reconcile_text(report, *dry_run));
    return 0;
  });

  CLI::App* du = app.add_subcommand("du", "where the instances path's bytes went, and what deleting would free");
  registry.emplace_back(du, [](Context& context) {
    auto usage = kiln::rpc::disk_usage(context.settings(), context.instances_path());
    context.print(kiln::instance::to_json(usage), du_text(usage));
    return 0;
  });
}

}  // namespace kilnctl
