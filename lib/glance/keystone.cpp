#include "kiln/glance/keystone.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "kiln/util/error.h"

namespace kiln::glance {

namespace {

using json = nlohmann::json;

bool is_password(const KeystoneCredentials& credentials) {
  return credentials.auth_type == "password" || credentials.auth_type == "v3password";
}

void require_field(const std::string& value, const std::string& field, const std::string& auth_type) {
  if (value.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "Keystone auth_type " + auth_type + " needs " + field);
  }
}

KeystoneCredentials validated(KeystoneCredentials credentials) {
  if (credentials.auth_url.scheme.empty() || credentials.auth_url.host.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "no Keystone auth_url configured");
  }
  const std::string& type = credentials.auth_type;
  if (is_password(credentials)) {
    require_field(credentials.username, "username", type);
    require_field(credentials.password, "password", type);
    require_field(credentials.user_domain_name, "user_domain_name", type);
    require_field(credentials.project_name, "project_name (kiln asks for a project-scoped token)", type);
    require_field(credentials.project_domain_name, "project_domain_name", type);
  } else if (type == "v3applicationcredential") {
    require_field(credentials.application_credential_id, "application_credential_id", type);
    require_field(credentials.application_credential_secret, "application_credential_secret", type);
  } else {
    throw Error(ErrorCode::kInvalidArgument, "Keystone auth_type '" + type +
                                                 "' is not supported (use password or v3applicationcredential)");
  }
  const std::string& interface = credentials.interface;
  if (interface != "public" && interface != "internal" && interface != "admin") {
    throw Error(ErrorCode::kInvalidArgument,
                "Keystone interface '" + interface + "' is not one of public, internal, admin");
  }
  return credentials;
}

// Requests go to <root>/v3/...; operators write auth_url with or without /v3.
http::Url identity_root(http::Url url) {
  const std::string version = "/v3";
  if (url.base_path.ends_with(version)) url.base_path.resize(url.base_path.size() - version.size());
  return url;
}

std::chrono::seconds check_margin(std::chrono::seconds margin) {
  if (margin.count() < 0) {
    throw Error(ErrorCode::kInvalidArgument, "the Keystone token renewal margin cannot be negative");
  }
  return margin;
}

// Keystone writes times as "2026-11-25T13:00:00.000000Z" (UTC). Returns
// nullopt for anything else; the fraction of a second does not matter here.
std::optional<std::chrono::system_clock::time_point> parse_keystone_time(const std::string& text) {
  int year, month, day, hour, minute, second;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &year, &month, &day, &hour, &minute, &second) != 6) {
    return std::nullopt;
  }
  std::chrono::year_month_day date{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                                   std::chrono::day{static_cast<unsigned>(day)}};
  if (!date.ok()) return std::nullopt;
  return std::chrono::sys_days{date} + std::chrono::hours{hour} + std::chrono::minutes{minute} +
         std::chrono::seconds{second};
}

std::string string_field(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

KeystoneTokenSource::KeystoneTokenSource(KeystoneCredentials credentials, std::chrono::seconds renewal_margin,
                                         http::Timeouts timeouts, http::TlsOptions tls)
    : credentials_(validated(std::move(credentials))),
      renewal_margin_(check_margin(renewal_margin)),
      keystone_(identity_root(credentials_.auth_url), timeouts, tls) {}

std::string KeystoneTokenSource::token() {
  std::lock_guard lock(mutex_);
  renew_if_needed();
  return token_;
}

void KeystoneTokenSource::invalidate() {
  std::lock_guard lock(mutex_);
  token_.clear();
}

std::vector<http::Url> KeystoneTokenSource::image_endpoints() {
  std::lock_guard lock(mutex_);
  renew_if_needed();
  std::vector<http::Url> urls;
  for (const auto& endpoint : catalog_) {
    if (endpoint.service_type != "image" || endpoint.interface != credentials_.interface) continue;
    if (!credentials_.region_name.empty() && endpoint.region != credentials_.region_name) continue;
    try {
      http::Url url = http::parse_url(endpoint.url);
      // Catalogs often list the versioned root; GlanceClient adds /v2 itself.
      if (url.base_path.ends_with("/v2")) url.base_path.resize(url.base_path.size() - 3);
      urls.push_back(std::move(url));
    } catch (const Error& error) {
      throw Error(ErrorCode::kHttpError, "Keystone at " + credentials_.auth_url.to_string() +
                                             " lists an image endpoint that is not a URL: " + error.what());
    }
  }
  return urls;
}

void KeystoneTokenSource::renew_if_needed() {
  bool expiring = std::chrono::steady_clock::now() + renewal_margin_ >= expires_;
  if (token_.empty() || expiring) log_in();
}

std::string KeystoneTokenSource::who() const {
  if (!is_password(credentials_)) {
    return "application credential " + credentials_.application_credential_id;
  }
  return "user '" + credentials_.username + "' (domain '" + credentials_.user_domain_name + "', project '" +
         credentials_.project_name + "' in domain '" + credentials_.project_domain_name + "')";
}

void KeystoneTokenSource::log_in() {
  json auth;
  if (is_password(credentials_)) {
    auth["identity"] = {{"methods", {"password"}},
                        {"password",
                         {{"user",
                           {{"name", credentials_.username},
                            {"domain", {{"name", credentials_.user_domain_name}}},
                            {"password", credentials_.password}}}}}};
    auth["scope"] = {{"project",
                      {{"name", credentials_.project_name},
                       {"domain", {{"name", credentials_.project_domain_name}}}}}};
  } else {
    auth["identity"] = {{"methods", {"application_credential"}},
                        {"application_credential",
                         {{"id", credentials_.application_credential_id},
                          {"secret", credentials_.application_credential_secret}}}};
  }
  http::Request request{"POST", "/v3/auth/tokens",
                        {{"Content-Type", "application/json"}, {"Accept", "application/json"}},
                        json{{"auth", auth}}.dump()};
  const std::string keystone = "Keystone at " + credentials_.auth_url.to_string();

  // The lifetime runs on our steady clock from before the request, so neither
  // a skew between Keystone's clock and ours nor a jump of ours matters.
  auto sent = std::chrono::steady_clock::now();
  http::Response response;
  try {
    response = keystone_.send(request);
  } catch (const Error& error) {
    throw Error(ErrorCode::kHttpError, "cannot reach " + keystone + " to log in " + who() + ": " + error.what());
  }
  std::string status = "HTTP " + std::to_string(response.status);
  if (response.status == 401) {
    throw Error(ErrorCode::kInvalidArgument,
                keystone + " refused " + who() + " (" + status + "): wrong " +
                    (is_password(credentials_) ? "password, or no such user or project"
                                               : "secret, or the credential was deleted or expired"));
  }
  if (response.status >= 400 && response.status < 500) {
    // Keystone's own words are not repeated: a validation message may quote the request.
    throw Error(ErrorCode::kInvalidArgument, keystone + " rejected the login of " + who() + " (" + status +
                                                 "); is auth_url Keystone's identity endpoint?");
  }
  if (response.status != 201 && response.status != 200) {
    throw Error(ErrorCode::kHttpError, keystone + " answered " + status + " to the login of " + who());
  }

  std::string token = response.header("x-subject-token");
  json body = json::parse(response.body, nullptr, false);
  if (token.empty() || body.is_discarded() || !body.contains("token") || !body["token"].is_object()) {
    throw Error(ErrorCode::kHttpError, keystone + " answered " + status + " without a token for " + who());
  }
  const json& details = body["token"];
  auto expires_at = parse_keystone_time(string_field(details, "expires_at"));
  if (!expires_at) {
    throw Error(ErrorCode::kHttpError, keystone + " gave a token without a readable expires_at for " + who());
  }
  auto issued_at = parse_keystone_time(string_field(details, "issued_at"));
  auto lifetime = *expires_at - issued_at.value_or(std::chrono::system_clock::now());

  std::vector<CatalogEndpoint> catalog;
  auto services = details.find("catalog");
  if (services != details.end() && services->is_array()) {
    for (const json& service : *services) {
      auto endpoints = service.find("endpoints");
      if (!service.is_object() || endpoints == service.end() || !endpoints->is_array()) continue;
      for (const json& endpoint : *endpoints) {
        if (!endpoint.is_object()) continue;
        std::string region = string_field(endpoint, "region_id");
        if (region.empty()) region = string_field(endpoint, "region");
        catalog.push_back({string_field(service, "type"), string_field(endpoint, "interface"), region,
                           string_field(endpoint, "url")});
      }
    }
  }

  token_ = std::move(token);
  expires_ = sent + std::chrono::duration_cast<std::chrono::steady_clock::duration>(lifetime);
  catalog_ = std::move(catalog);
}

}  // namespace kiln::glance
