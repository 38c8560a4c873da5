// kilnctl __complete images|instances: the words bash completion offers
// (packaging/completion/kilnctl), one per line, read from this host's
// instances path only (no Glance, no libvirt, no kilnd: completion must be
// quick and never block). Hidden from --help; prints nothing on any error.
#include <iostream>
#include <set>

#include "commands.h"
#include "kiln/cache/maintenance.h"
#include "kiln/util/layout.h"

namespace kilnctl {

void add_complete_command(CLI::App& app, Registry& registry) {
  auto what = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand("__complete", "words for shell completion");
  command->group("");  // hidden
  command->add_option("what", *what, "images or instances")->required()->check(CLI::IsMember({"images", "instances"}));
  registry.emplace_back(command, [what](Context& context) {
    std::set<std::string> words;
    try {
      if (*what == "images") {
        for (const auto& entry : kiln::cache::list_cache(context.instances_path())) {
          if (entry.info) words.insert(entry.info->image_id);
        }
      } else {
        std::error_code error;
        for (const auto& entry : std::filesystem::directory_iterator(context.instances_path(), error)) {
          std::string name = entry.path().filename().string();
          if (kiln::layout::is_instance_directory_name(name) && entry.is_directory(error)) words.insert(name);
        }
      }
    } catch (const std::exception&) {
      return 0;  // nothing to offer
    }
    for (const auto& word : words) std::cout << word << "\n";
    return 0;
  });
}

}  // namespace kilnctl
