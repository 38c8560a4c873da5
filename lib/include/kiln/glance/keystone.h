// Keystone v3 authentication for the Glance client, as nova.conf's [glance]
// keystoneauth options give it.
//
// A KeystoneTokenSource logs in to Keystone (POST /v3/auth/tokens) with a
// user's password, scoped to a project, or with an application credential
// (already scoped to its creator's project), and hands the token to
// GlanceClient. It keeps the token until the token is within the renewal
// margin of its expiry or a caller reports it refused (invalidate()), and
// only then logs in again. The service catalog of the last login names the
// image service's endpoints, for deployments that configure Keystone instead
// of [glance] api_servers.
//
// The password and the application credential secret never appear in an
// error message, and this module logs nothing. A KeystoneTokenSource is safe
// for concurrent use from multiple threads without external synchronization;
// threads that need a new token at the same time wait for one login.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/glance/client.h"
#include "kiln/http/client.h"
#include "kiln/http/url.h"

namespace kiln::glance {

struct KeystoneCredentials {
  // Keystone's identity endpoint, with or without the trailing /v3
  // ("https://keystone.example:5000/v3" and ".../5000" both work).
  http::Url auth_url;
  // "password" (or its alias "v3password"): username + password, scoped to
  // project_name.
  // "v3applicationcredential": application_credential_id + _secret.
  std::string auth_type = "password";
  std::string username;
  std::string password;
  std::string user_domain_name = "Default";
  std::string project_name;
  std::string project_domain_name = "Default";
  std::string application_credential_id;
  std::string application_credential_secret;
  // Which catalog endpoints image_endpoints() returns: "public", "internal"
  // or "admin"; and, when not empty, only those of this region.
  std::string interface = "public";
  std::string region_name;
};

inline constexpr std::chrono::seconds kDefaultRenewalMargin = std::chrono::minutes(5);

class KeystoneTokenSource : public TokenSource {
 public:
  // Checks that `credentials` name everything their auth_type needs; talks
  // to nobody. A token is renewed once it expires within `renewal_margin`.
  // Throws kiln::Error kInvalidArgument naming the missing or bad field.
  explicit KeystoneTokenSource(KeystoneCredentials credentials,
                               std::chrono::seconds renewal_margin = kDefaultRenewalMargin,
                               http::Timeouts timeouts = {}, http::TlsOptions tls = {});

  // The cached token, or a new one when there is none, it expires within the
  // renewal margin, or it was invalidated. Throws kiln::Error: kHttpError
  // when Keystone cannot be reached, answers 5xx or answers something that
  // is not a token; kInvalidArgument when Keystone refuses the credentials
  // (401) or the request (other 4xx), naming the user or credential and
  // Keystone's URL.
  std::string token() override;

  // The last token was refused: the next token() logs in again.
  void invalidate() override;

  // The URLs of the catalog's "image" endpoints for the configured interface
  // (and region, if one is set), in catalog order, without a trailing /v2
  // (GlanceClient adds it). Empty when the catalog lists none. Logs in
  // first when there is no valid token. Throws as token(), and kHttpError
  // when the catalog holds a URL that is not one.
  std::vector<http::Url> image_endpoints();

 private:
  struct CatalogEndpoint {
    std::string service_type;
    std::string interface;
    std::string region;
    std::string url;
  };

  // REQUIRES: mutex_ is held.
  void renew_if_needed();
  // REQUIRES: mutex_ is held.
  void log_in();
  // "user 'x' (domain ..., project ...)" or "application credential <id>".
  std::string who() const;

  const KeystoneCredentials credentials_;
  const std::chrono::seconds renewal_margin_;
  const http::Client keystone_;

  std::mutex mutex_;
  std::string token_;  // "" = none, or invalidated
  std::chrono::steady_clock::time_point expires_;
  std::vector<CatalogEndpoint> catalog_;
};

}  // namespace kiln::glance
