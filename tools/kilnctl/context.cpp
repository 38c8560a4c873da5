#include "context.h"

#include <cstdio>
#include <iostream>

#include "kiln/config/glance_client.h"

namespace kilnctl {

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

const kiln::rpc::AgentClient* Context::agent() {
  if (agent_) return agent_->get();
  agent_.emplace();
  std::error_code error;
  if (direct_ || !std::filesystem::is_socket(settings_.rpc.unix_socket, error)) return nullptr;
  try {
    kiln::rpc::AgentClient probe(settings_.rpc.unix_socket, std::chrono::seconds(2));
    if (probe.call("GET", "/healthz").status != 200) return nullptr;
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
