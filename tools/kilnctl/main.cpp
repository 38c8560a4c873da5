// kilnctl: the operator's command line. It parses flags, loads settings,
// calls lib/ and prints; every decision lives in lib/ so that each command
// can become an RPC operation of kilnd unchanged.
//
// Exit codes: 0 success, 1 a kiln error (its stable code is printed, and in
// the JSON on stdout with --json, in kilnd's error envelope), 2 a usage error
// or a request refused before anything started (invalid_argument with the
// JSON pointer of the field, as kilnd's 400 says), 3 cache verify found rot,
// 4 image inspect refused the image.
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "kiln/instance/inventory.h"
#include "kiln/rpc/wire.h"
#include "kiln/util/error.h"

namespace {

struct GlobalOptions {
  kiln::config::Overrides overrides;
  bool json_output = false;
  bool direct = false;
};

void add_global_options(CLI::App& app, GlobalOptions& options) {
  app.add_option("--config", options.overrides.config_file, "INI file (default /etc/kiln/kiln.conf if present)");
  app.add_option("--instances-path", options.overrides.instances_path, "instances directory (default /var/lib/kiln/instances)");
  app.add_option("--glance", options.overrides.glance, "Glance endpoint root(s), e.g. http://127.0.0.1:9292");
  app.add_option("--libvirt-uri", options.overrides.libvirt_uri, "libvirt URI (default qemu:///system)");
  app.add_option("--virt-type", options.overrides.virt_type, "kvm or qemu (default: kvm where it works)");
  app.add_option("--socket", options.overrides.socket, "kilnd's socket (default [rpc] unix_socket)");
  app.add_flag("--direct", options.direct, "work on the host directly even when kilnd runs");
  app.add_flag("--json", options.json_output, "print JSON");
}

// The global options as a help section: CLI11 shows a subcommand only its
// own options, and an operator reading `kilnctl cache ls --help` must see
// --json and --instances-path there too.
std::string global_options_help(const CLI::App& app) {
  std::string text = "Global options (before or after the command):\n";
  for (const CLI::Option* option : app.get_options()) {
    std::string names = option->get_name(false, true);
    if (names.empty() || names == "--help" || names == "-h,--help") continue;
    if (option->get_type_size() != 0) names += " " + option->get_type_name();
    text += "  " + names + std::string(names.size() < 30 ? 30 - names.size() : 1, ' ') + option->get_description() + "\n";
  }
  return text;
}

// Global options are accepted after the subcommand too (kilnctl cache ls --json).
void let_global_options_fall_through(CLI::App& app, const std::string& footer) {
  for (CLI::App* command : app.get_subcommands({})) {
    command->fallthrough();
    command->footer(footer);
    let_global_options_fall_through(*command, footer);
  }
}

// Every command reads the instances path except the two that make it on a
// fresh host (boot, and cache fetch: a pre-cache is the first half of a
// boot), image inspect, which reads only the file it is given, and the
// completion helper.
bool needs_instances_path(const CLI::App& app) {
  for (const CLI::App* command : app.get_subcommands()) {
    const std::string& name = command->get_name();
    // fleet: the hosts are elsewhere, reached through the broker; this host's path is not asked.
    if (name == "boot" || name == "fetch" || name == "image" || name == "fleet" || name == "__complete") return false;
    return needs_instances_path(*command);
  }
  return true;
}

int report(const kiln::Error& error, bool json_output) {
  std::cerr << "kilnctl: error [" << error.code_name() << "]: " << error.what() << "\n";
  if (json_output) std::cout << kiln::rpc::error_envelope(error, kilnctl::subject()).dump(2) << "\n";
  return dynamic_cast<const kiln::rpc::ValidationError*>(&error) != nullptr ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kilnctl: boot instances from Glance images and explain the host's storage"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kilnctl " KILN_VERSION);
  GlobalOptions global;
  add_global_options(app, global);
  kilnctl::Registry registry;
  kilnctl::add_instance_commands(app, registry);
  kilnctl::add_cache_commands(app, registry);
  kilnctl::add_image_commands(app, registry);
  kilnctl::add_inventory_commands(app, registry);
  kilnctl::add_fleet_commands(app, registry);
  kilnctl::add_complete_command(app, registry);
  let_global_options_fall_through(app, global_options_help(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // CLI11 reports a missing subcommand before the words it did not know;
    // `kilnctl bootx` must name `bootx`, not ask for a subcommand.
    auto unknown = app.remaining();
    if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr && !unknown.empty()) {
      std::cerr << "kilnctl: unknown command or option '" << unknown.front() << "'\n"
                << "Run with --help for more information.\n";
      return 2;
    }
    return app.exit(error) == 0 ? 0 : 2;
  }

  try {
    auto settings = kiln::config::load_settings(global.overrides);
    for (const auto& warning : settings.warnings) std::cerr << "kilnctl: warning: " << warning << "\n";
    kilnctl::Context context(std::move(settings), global.json_output, global.direct);
    // Checked when the command first reads it: a command sent to kilnd
    // never does (the path is kilnd's, which checks it per request, and this
    // user may not be allowed to read it).
    if (needs_instances_path(app)) context.check_instances_path_on_use();
    for (auto& [command, run] : registry) {
      if (command->parsed()) return run(context);
    }
    return 2;
  } catch (const kiln::Error& error) {
    return report(error, global.json_output);
  }
}
