#include "context.h"

#include <cstdio>
#include <iostream>

namespace kilnctl {

namespace {

// A static token, when configured, is the whole of authentication.
class StaticToken : public kiln::glance::TokenSource {
 public:
  explicit StaticToken(std::string token) : token_(std::move(token)) {}
  std::string token() override { return token_; }
  void invalidate() override {}

 private:
  std::string token_;
};

}  // namespace

// Tokens: Keystone's when [keystone] is configured, else a static one, else none.
// Endpoints: [glance] api_servers, else the image endpoints of Keystone's catalog.
const kiln::glance::GlanceClient& Context::glance() {
  if (glance_) return *glance_;
  std::shared_ptr<kiln::glance::TokenSource> tokens;
  auto endpoints = settings_.glance_api_servers;
  if (settings_.keystone) {
    auto keystone = std::make_shared<kiln::glance::KeystoneTokenSource>(
        *settings_.keystone, kiln::glance::kDefaultRenewalMargin, settings_.glance_timeouts, settings_.keystone_tls);
    if (endpoints.empty()) endpoints = keystone->image_endpoints();
    tokens = keystone;
  } else if (!settings_.glance_token.empty()) {
    tokens = std::make_shared<StaticToken>(settings_.glance_token);
  }
  glance_ = std::make_unique<kiln::glance::GlanceClient>(endpoints, settings_.glance_timeouts,
                                                         settings_.glance_tls, tokens);
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
