// What every kilnctl command works with: the settings, and the lib/ objects
// built from them on first use (a command that needs no Glance never
// validates Glance settings).
#pragma once

#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "kiln/cache/image_cache.h"
#include "kiln/config/settings.h"
#include "kiln/glance/client.h"
#include "kiln/rpc/agent_client.h"
#include "kiln/rpc/steps.h"
#include "kiln/rpc/wire.h"
#include "kiln/virt/connection.h"

namespace kilnctl {

class Context {
 public:
  // `direct`: never go through kilnd, even when one answers on the socket.
  Context(kiln::config::Settings settings, bool json_output, bool direct)
      : settings_(std::move(settings)), json_output_(json_output), direct_(direct) {}

  const kiln::config::Settings& settings() const { return settings_; }
  bool json_output() const { return json_output_; }
  // The instances path, checked on first use (require_instances_path) when
  // the command reads it: after set_subject, so the error names the instance
  // as kilnd's answer does, and whether kilnd runs or not (a read command
  // reads the path itself either way).
  const std::filesystem::path& instances_path();
  void check_instances_path_on_use() { check_instances_path_ = true; }

  const kiln::glance::GlanceClient& glance();
  const kiln::cache::ImageCache& cache();
  kiln::virt::Connection& libvirt();
  // The running agent on [rpc] unix_socket (or --socket), when one answers
  // GET /healthz for this host's instances path and libvirt URI; nullptr when
  // none does or --direct was given.
  const kiln::rpc::AgentClient* agent();

  // Prints `json` with --json, else `text` (which ends with a newline).
  void print(const nlohmann::json& json, const std::string& text) const;

 private:
  bool serves_the_same_host(const nlohmann::json& health) const;

  kiln::config::Settings settings_;
  bool json_output_;
  bool direct_;
  bool check_instances_path_ = false;
  std::optional<std::unique_ptr<kiln::rpc::AgentClient>> agent_;  // set once probed
  std::unique_ptr<kiln::glance::GlanceClient> glance_;
  std::unique_ptr<kiln::cache::ImageCache> cache_;
  std::unique_ptr<kiln::virt::Connection> libvirt_;
};

// What the running command is about (its instance, its image): an error's
// envelope names them, whether kilnctl works directly or through kilnd.
void set_subject(const std::string& uuid, const std::string& image_id = "");
const kiln::rpc::ErrorContext& subject();
// The hooks of kiln/rpc/steps.h for a command that works directly: each step
// noted as the subject's, as kilnd's operation notes it; `progress` (nullptr
// for none) for the download; no download slots.
kiln::rpc::StepHooks direct_hooks(const kiln::cache::FetchProgress& progress);

// "1.5 GiB"
std::string human_bytes(std::uint64_t bytes);

}  // namespace kilnctl
