#include "kiln/config/glance_client.h"

#include "kiln/glance/keystone.h"
#include "kiln/util/error.h"

namespace kiln::config {

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

std::unique_ptr<glance::GlanceClient> make_glance_client(const Settings& settings) {
  std::shared_ptr<glance::TokenSource> tokens;
  auto endpoints = settings.glance_api_servers;
  if (settings.keystone) {
    auto keystone = std::make_shared<glance::KeystoneTokenSource>(*settings.keystone, glance::kDefaultRenewalMargin,
                                                                  settings.glance_timeouts, settings.keystone_tls);
    if (endpoints.empty()) endpoints = keystone->image_endpoints();
    tokens = keystone;
  } else if (!settings.glance_token.empty()) {
    tokens = std::make_shared<StaticToken>(settings.glance_token);
  }
  if (endpoints.empty()) throw Error(ErrorCode::kInvalidArgument, "no Glance endpoint: set [glance] api_servers");
  // [glance] num_retries and retry_backoff_ms: the record GET like the download.
  glance::RetryPolicy retry{settings.cache.download_retries, settings.cache.retry_backoff};
  return std::make_unique<glance::GlanceClient>(endpoints, settings.glance_timeouts, settings.glance_tls, tokens,
                                                retry);
}

}  // namespace kiln::config
