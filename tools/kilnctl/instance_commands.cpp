// kilnctl boot / delete.
#include <sstream>

#include "commands.h"
#include "kiln/util/error.h"
#include "kiln/instance/provision.h"
#include "kiln/rpc/steps.h"
#include "kiln/rpc/wire.h"
#include "agent_route.h"
#include "progress.h"
#include "kiln/util/text.h"

namespace kilnctl {

namespace {

using nlohmann::json;

std::string boot_text(const kiln::instance::BootResult& result) {
  const auto& dir = result.directory;
  const auto& base = result.base;
  std::ostringstream out;
  out << "instance " << dir.uuid() << ": domain " << result.domain_name << " (" << result.domain_type << ") "
      << result.domain_state << "\n"
      << "  directory    " << dir.path().string() << "\n";
  if (result.rbd_root) {
    out << "  disk         RBD " << result.rbd_root->image << ", raw, " << human_bytes(result.root_bytes)
        << " virtual, a clone of " << result.rbd_root->parent << "\n";
    if (result.rbd_swap) out << "  disk.swap    RBD " << result.rbd_swap->image << ", a clone of " << result.rbd_swap->parent << "\n";
    if (result.rbd_ephemeral) {
      out << "  disk.local   RBD " << result.rbd_ephemeral->image << ", a clone of " << result.rbd_ephemeral->parent << "\n";
    }
    out << "  base         "
        << (!(result.rbd_pool_base && result.rbd_pool_base->imported) ? std::string("nothing downloaded")
            : base.downloaded_bytes > 0 ? "downloaded " + human_bytes(base.downloaded_bytes) + ", written into the pool once for every host"
                                        : std::string("from the local cache, written into the pool once for every host"))
        << "\n  also         disk.info, console.log, libvirt.xml\n";
    return out.str();
  }
  out << "  disk         qcow2, " << human_bytes(result.root_bytes) << " virtual, backed by "
      << base.path.string() << "\n";
  if (result.swap_base) out << "  disk.swap    qcow2, backed by " << result.swap_base->string() << "\n";
  if (result.ephemeral_base) out << "  disk.local   qcow2, backed by " << result.ephemeral_base->string() << "\n";
  out << "  base         image " << base.record.id << " (" << kiln::printable(base.record.name) << ", " << base.record.disk_format
      << " -> raw, " << human_bytes(base.virtual_size) << " virtual), "
      << (base.downloaded_bytes > 0 ? "downloaded " + human_bytes(base.downloaded_bytes)
                                    : std::string("already cached, nothing downloaded"))
      << "\n"
      << "  also         disk.info, console.log, libvirt.xml\n";
  return out.str();
}

// "type=ethernet,mac=52:54:00:12:34:56,tap=tap0" -> a NetworkInterface; lib/
// checks the values.
kiln::virt::NetworkInterface parse_nic(const std::string& text, std::size_t index) {
  kiln::virt::NetworkInterface nic;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    auto equals = item.find('=');
    std::string key = item.substr(0, equals);
    std::string value = equals == std::string::npos ? "" : item.substr(equals + 1);
    if (key == "type") nic.type = value;
    else if (key == "bridge") nic.bridge = value;
    else if (key == "mac") nic.mac = value;
    else if (key == "tap") nic.tap = value;
    else if (key == "model") nic.model = value;
    else throw kiln::rpc::ValidationError("--nic: unknown key '" + key + "' in '" + text + "'",
                                          "/nics/" + std::to_string(index));
  }
  return nic;
}

std::string agent_boot_text(const json& result) {
  const json& domain = result.value("domain", json::object());
  return "instance " + result.value("uuid", std::string()) + ": domain " + domain.value("name", std::string()) +
         " (" + domain.value("type", std::string()) + ") " + domain.value("state", std::string()) +
         " (booted by kilnd)\n  directory    " + result.value("instance_dir", std::string()) + "\n";
}

}  // namespace

CLI::Validator utf8_text() {
  return CLI::Validator(
      [](std::string& value) {
        return kiln::is_utf8(value) ? std::string() : "the name is not valid UTF-8: " + kiln::printable(value);
      },
      "UTF-8", "UTF8");
}

void add_instance_commands(CLI::App& app, Registry& registry) {
  struct BootOptions {
    kiln::instance::BootRequest request;
    std::vector<std::string> nics;
    bool no_start = false;
  };
  auto boot = std::make_shared<BootOptions>();
  CLI::App* command = app.add_subcommand("boot", "download (if needed) an image and boot an instance from it");
  command->add_option("--image", boot->request.image_id, "Glance image id")->required();
  command->add_option("--uuid", boot->request.uuid, "instance uuid")->required();
  command
      ->add_option("--name", boot->request.name,
                   "display name (<title> and kiln's metadata); the domain is named by [DEFAULT] instance_name_template")
      ->check(utf8_text());
  command->add_option("--vcpus", boot->request.vcpus, "virtual CPUs")->required();
  command->add_option("--memory-mb", boot->request.memory_mb, "memory in MiB")->required();
  command->add_option("--root-gb", boot->request.root_gb, "root disk in GiB (0: the image's size)")->required();
  command->add_option("--swap-mb", boot->request.swap_mb, "swap disk in MiB (0: none)")->required();
  command->add_option("--ephemeral-gb", boot->request.ephemeral_gb, "ephemeral disk disk.local in GiB (0: none)");
  command->add_option("--nic", boot->nics,
                      "a NIC: type=bridge|ethernet,bridge=BR,mac=MAC,tap=TAP,model=MODEL (repeatable)");
  command->add_flag("--no-start", boot->no_start, "define the domain but do not start it");
  registry.emplace_back(command, [boot](Context& context) {
    boot->request.start = !boot->no_start;
    for (const auto& nic : boot->nics) boot->request.nics.push_back(parse_nic(nic, boot->request.nics.size()));
    // kilnd's own validator, before anything starts on either path.
    auto valid = kiln::rpc::parse_boot_request(boot->request);
    set_subject(valid.request.uuid, valid.request.image_id);
    if (const auto* agent = context.agent()) {
      json result = run_through_agent(*agent, "POST", "/v1/instances", valid.body,
                                      context.json_output() ? "" : "download");
      context.print(result, agent_boot_text(result));
      return 0;
    }
    // The steps kilnd's operation takes (kiln/rpc/steps.h), so a failure
    // names the same step either way.
    kiln::rpc::refuse_existing_instance(context.instances_path(), valid.request.uuid);
    auto progress = context.json_output() ? nullptr : progress_reporter("download");
    auto result = kiln::rpc::boot(valid.request, context.cache(), direct_hooks(progress), [&] {
      const auto& settings = context.settings();
      auto rbd = kiln::rpc::rbd_host(settings);
      kiln::instance::Host host{context.instances_path(), context.cache(), context.libvirt(), settings.virt_type,
                                settings.start, settings.instance_name_template, settings.default_ephemeral_format,
                                settings.disk_cache_mode, rbd ? &*rbd : nullptr};
      return kiln::instance::provision(valid.request, host, progress);
    }, context.settings().rbd.enabled);
    finish_progress();
    context.print(kiln::instance::to_json(result), boot_text(result));
    return 0;
  });

  auto uuid = std::make_shared<std::string>();
  CLI::App* remove = app.add_subcommand("delete", "destroy and undefine an instance and remove its directory");
  remove->add_option("uuid", *uuid, "instance uuid")->required();
  registry.emplace_back(remove, [uuid](Context& context) {
    set_subject(*uuid);
    if (const auto* agent = context.agent()) {
      json result = run_through_agent(*agent, "DELETE", "/v1/instances/" + *uuid, std::nullopt, "");
      context.print(result, "instance " + *uuid + ": deleted by kilnd (base images stay in the cache)\n");
      return 0;
    }
    const auto& instances_path = context.instances_path();  // checked before libvirt is asked
    auto rbd = kiln::rpc::rbd_host(context.settings());
    auto result = kiln::rpc::delete_instance(
        *uuid, instances_path, [&]() -> kiln::virt::Connection& { return context.libvirt(); }, direct_hooks(nullptr),
        rbd ? &*rbd : nullptr);
    std::string text = "instance " + *uuid + ": " +
                       (result.domain_found || result.directory_found ? "deleted" : "nothing to delete") +
                       " (base images stay in the cache" +
                       (result.rbd_images.empty() ? std::string() : ", RBD images removed: " + std::to_string(result.rbd_images.size())) +
                       ")\n";
    context.print(json(result), text);
    return 0;
  });
}

}  // namespace kilnctl
