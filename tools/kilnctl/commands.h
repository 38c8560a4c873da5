// The kilnctl subcommands. Each add_* registers its flags on the app and
// returns the function that runs it once the flags are parsed.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "context.h"

namespace kilnctl {

using Runner = std::function<int(Context&)>;
using Registry = std::vector<std::pair<CLI::App*, Runner>>;

void add_instance_commands(CLI::App& app, Registry& registry);
void add_cache_commands(CLI::App& app, Registry& registry);
void add_image_commands(CLI::App& app, Registry& registry);
void add_inventory_commands(CLI::App& app, Registry& registry);
void add_fleet_commands(CLI::App& app, Registry& registry);
void add_complete_command(CLI::App& app, Registry& registry);  // hidden: __complete

// Accepts only UTF-8: JSON cannot carry other bytes, and nlohmann would throw
// mid-request. Checked before anything is sent or created.
CLI::Validator utf8_text();

}  // namespace kilnctl
