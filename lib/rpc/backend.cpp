#include "backend.h"

#include "kiln/glance/keystone.h"
#include "kiln/util/error.h"

namespace kiln::rpc {

namespace {

// A static token, when configured, is the whole of authentication.
class StaticToken : public glance::TokenSource {
 public:
  explicit StaticToken(std::string token) : token_(std::move(token)) {}
  std::string token() override { return token_; }
  void invalidate() override {}

 private:
  std::string token_;
};

}  // namespace

// As kilnctl: Keystone's tokens when [keystone] is set, else a static token,
// else none; endpoints from [glance] api_servers, else Keystone's catalog.
const cache::ImageCache& Backend::cache() const {
  std::lock_guard lock(mutex_);
  if (cache_) return *cache_;
  std::shared_ptr<glance::TokenSource> tokens;
  auto endpoints = settings_.glance_api_servers;
  if (settings_.keystone) {
    auto keystone = std::make_shared<glance::KeystoneTokenSource>(*settings_.keystone, glance::kDefaultRenewalMargin,
                                                                  settings_.glance_timeouts, settings_.keystone_tls);
    if (endpoints.empty()) endpoints = keystone->image_endpoints();
    tokens = keystone;
  } else if (!settings_.glance_token.empty()) {
    tokens = std::make_shared<StaticToken>(settings_.glance_token);
  }
  if (endpoints.empty()) throw Error(ErrorCode::kInvalidArgument, "no Glance endpoint: set [glance] api_servers");
  glance_ = std::make_unique<glance::GlanceClient>(endpoints, settings_.glance_timeouts, settings_.glance_tls, tokens);
  cache_ = std::make_unique<cache::ImageCache>(settings_.instances_path, *glance_, settings_.cache);
  return *cache_;
}

}  // namespace kiln::rpc
