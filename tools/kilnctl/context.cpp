#include "context.h"

#include <cstdio>
#include <iostream>

#include "kiln/config/glance_client.h"
#include "kiln/instance/inventory.h"

namespace kilnctl {

const std::filesystem::path& Context::instances_path() {
  if (check_instances_path_) {
    kiln::instance::require_instances_path(settings_.instances_path);
    check_instances_path_ = false;
  }
  return settings_.instances_path;
}

const kiln::glance::GlanceClient& Context::glance() {
  if (!glance_) glance_ = kiln::config::make_glance_client(settings_);
  return *glance_;
}

const kiln::cache::ImageCache& Context::cache() {
  if (!cache_) cache_ = std::make_unique<kiln::cache::ImageCache>(instances_path(), glance(), settings_.cache);
  return *cache_;
}

kiln::virt::Connection& Context::libvirt() {
  if (!libvirt_) libvirt_ = std::make_unique<kiln::virt::Connection>(settings_.libvirt_uri);
  return *libvirt_;
}

// An agent that serves another instances path or another libvirt (a kilnctl
// run with --instances-path or --libvirt-uri of its own) must not answer for
// this one: kilnctl then works directly, under the same locks kilnd takes.
bool Context::serves_the_same_host(const nlohmann::json& health) const {
  if (!health.is_object() || !health.contains("instances_path") || !health["instances_path"].is_string()) {
    return false;
  }
  std::error_code error;
  std::filesystem::path served = health["instances_path"].get<std::string>();
  const auto& ours = settings_.instances_path;
  bool same_path = served == ours || std::filesystem::equivalent(served, ours, error);
  return same_path && health.value("libvirt_uri", "") == settings_.libvirt_uri;
}

const kiln::rpc::AgentClient* Context::agent() {
  if (agent_) return agent_->get();
  agent_.emplace();
  std::error_code error;
  if (direct_ || !std::filesystem::is_socket(settings_.rpc.unix_socket, error)) return nullptr;
  try {
    kiln::rpc::AgentClient probe(settings_.rpc.unix_socket, std::chrono::seconds(2));
    auto health = probe.call("GET", "/healthz");
    if (health.status != 200 || !serves_the_same_host(health.body)) return nullptr;
  } catch (const kiln::Error&) {
    return nullptr;  // a stale socket: no agent runs
  }
  *agent_ = std::make_unique<kiln::rpc::AgentClient>(settings_.rpc.unix_socket);
  return agent_->get();
}

void Context::print(const nlohmann::json& json, const std::string& text) const {
  if (json_output_) {
    std::cout << json.dump(2) << "\n";
  } else {
    std::cout << text;
  }
}

namespace {
kiln::rpc::ErrorContext& subject_of_this_run() {
  static kiln::rpc::ErrorContext subject;
  return subject;
}
}  // namespace

void set_subject(const std::string& uuid, const std::string& image_id) {
  subject_of_this_run() = {uuid, image_id, ""};
}

const kiln::rpc::ErrorContext& subject() { return subject_of_this_run(); }

kiln::rpc::StepHooks direct_hooks(const kiln::cache::FetchProgress& progress) {
  return {[](const std::string& step) { subject_of_this_run().step = step; }, progress, nullptr};
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

}  // namespace kilnctl
