// kilnctl: the operator's command line. It parses flags, loads settings,
// calls lib/ and prints; every decision lives in lib/ so that each command
// can become an RPC operation of kilnd unchanged.
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kiln/cache/image_cache.h"
#include "kiln/config/settings.h"
#include "kiln/glance/client.h"
#include "kiln/instance/provision.h"
#include "kiln/util/error.h"
#include "kiln/virt/connection.h"

namespace {

using nlohmann::json;

struct GlobalOptions {
  kiln::config::Overrides overrides;
  bool json_output = false;
};

void add_global_options(CLI::App& app, GlobalOptions& options) {
  app.add_option("--config", options.overrides.config_file, "INI file (default /etc/kiln/kiln.conf if present)");
  app.add_option("--instances-path", options.overrides.instances_path, "instances directory (default /var/lib/kiln/instances)");
  app.add_option("--glance", options.overrides.glance, "Glance endpoint root(s), e.g. http://127.0.0.1:9292");
  app.add_option("--libvirt-uri", options.overrides.libvirt_uri, "libvirt URI (default qemu:///system)");
  app.add_flag("--json", options.json_output, "print JSON");
}

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

json boot_json(const kiln::instance::BootResult& result) {
  const auto& dir = result.directory;
  json out = {
      {"uuid", dir.uuid()},
      {"instance_dir", dir.path().string()},
      {"domain", {{"name", result.domain_name}, {"type", result.domain_type}, {"state", result.domain_state}}},
      {"disk", {{"path", dir.disk().string()}, {"format", "qcow2"}, {"virtual_size", result.root_bytes},
                {"backing_file", result.base.path.string()}}},
      {"base", {{"path", result.base.path.string()}, {"image_id", result.base.record.id},
                {"image_name", result.base.record.name}, {"disk_format", result.base.record.disk_format},
                {"virtual_size", result.base.virtual_size}, {"downloaded_bytes", result.base.downloaded_bytes}}},
      {"disk_info", dir.disk_info().string()},
      {"console_log", dir.console_log().string()},
      {"libvirt_xml", dir.libvirt_xml().string()},
  };
  if (result.swap_base) {
    out["swap"] = {{"path", dir.swap_disk().string()}, {"backing_file", result.swap_base->string()}};
  }
  return out;
}

void print_boot(const kiln::instance::BootResult& result) {
  const auto& dir = result.directory;
  const auto& base = result.base;
  std::cout << "instance " << dir.uuid() << ": domain " << result.domain_name << " (" << result.domain_type
            << ") " << result.domain_state << "\n"
            << "  directory    " << dir.path().string() << "\n"
            << "  disk         qcow2, " << human_bytes(result.root_bytes) << " virtual, backed by "
            << base.path.string() << "\n";
  if (result.swap_base) {
    std::cout << "  disk.swap    qcow2, backed by " << result.swap_base->string() << "\n";
  }
  std::cout << "  base         image " << base.record.id << " (" << base.record.name << ", "
            << base.record.disk_format << " -> raw, " << human_bytes(base.virtual_size) << " virtual), "
            << (base.downloaded_bytes > 0 ? "downloaded " + human_bytes(base.downloaded_bytes)
                                          : std::string("already cached, nothing downloaded"))
            << "\n"
            << "  also         disk.info, console.log, libvirt.xml\n";
}

struct BootOptions {
  kiln::instance::BootRequest request;
  bool no_start = false;
};

void add_boot(CLI::App& app, BootOptions& boot) {
  CLI::App* command = app.add_subcommand("boot", "download (if needed) an image and boot an instance from it");
  command->add_option("--image", boot.request.image_id, "Glance image id")->required();
  command->add_option("--uuid", boot.request.uuid, "instance uuid")->required();
  command->add_option("--name", boot.request.name, "domain name (default instance-<uuid>)");
  command->add_option("--vcpus", boot.request.vcpus, "virtual CPUs")->required();
  command->add_option("--memory-mb", boot.request.memory_mb, "memory in MiB")->required();
  command->add_option("--root-gb", boot.request.root_gb, "root disk in GiB (0: the image's size)")->required();
  command->add_option("--swap-mb", boot.request.swap_mb, "swap disk in MiB (0: none)")->required();
  command->add_flag("--no-start", boot.no_start, "define the domain but do not start it");
}

int run_boot(const kiln::config::Settings& settings, BootOptions& boot, bool json_output) {
  kiln::glance::GlanceClient glance(settings.glance_api_servers);
  kiln::cache::ImageCache cache(settings.instances_path, glance);
  kiln::virt::Connection libvirt(settings.libvirt_uri);
  boot.request.start = !boot.no_start;
  kiln::instance::Host host{settings.instances_path, cache, libvirt, settings.virt_type};
  auto result = kiln::instance::provision(boot.request, host);
  if (json_output) {
    std::cout << boot_json(result).dump(2) << "\n";
  } else {
    print_boot(result);
  }
  return 0;
}

int run_delete(const kiln::config::Settings& settings, const std::string& uuid, bool json_output) {
  kiln::virt::Connection libvirt(settings.libvirt_uri);
  auto result = kiln::instance::delete_instance(uuid, settings.instances_path, libvirt);
  if (json_output) {
    std::cout << json{{"uuid", uuid}, {"domain_found", result.domain_found},
                      {"directory_found", result.directory_found}}.dump(2) << "\n";
  } else {
    std::cout << "instance " << uuid << ": "
              << (result.domain_found || result.directory_found ? "deleted" : "nothing to delete")
              << " (base images stay in the cache)\n";
  }
  return 0;
}

int report(const kiln::Error& error, bool json_output) {
  std::cerr << "kilnctl: error [" << error.code_name() << "]: " << error.what() << "\n";
  if (json_output) {
    std::cout << json{{"error", {{"code", error.code_name()}, {"message", error.what()}}}}.dump(2) << "\n";
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kilnctl: boot instances from Glance images and explain the host's storage"};
  app.require_subcommand(1);
  GlobalOptions global;
  add_global_options(app, global);
  BootOptions boot;
  add_boot(app, boot);
  std::string delete_uuid;
  CLI::App* remove = app.add_subcommand("delete", "destroy and undefine an instance and remove its directory");
  remove->add_option("uuid", delete_uuid, "instance uuid")->required();
  for (CLI::App* command : app.get_subcommands({})) command->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }

  try {
    kiln::config::Settings settings = kiln::config::load_settings(global.overrides);
    if (app.got_subcommand("boot")) return run_boot(settings, boot, global.json_output);
    return run_delete(settings, delete_uuid, global.json_output);
  } catch (const kiln::Error& error) {
    return report(error, global.json_output);
  }
}
