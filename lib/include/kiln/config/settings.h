// kiln's settings: defaults, then the INI file, then command-line flags.
//
// The file is nova.conf-style (see kiln/util/ini.h); systemd/kiln.conf.sample
// documents every key. An unknown section or key, or a bad value, is refused
// with the file, line and key, so a typo never silently falls back to a default.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/cache_policy.h"
#include "kiln/glance/keystone.h"
#include "kiln/http/client.h"
#include "kiln/http/url.h"

namespace kiln::config {

inline constexpr const char* kDefaultConfigFile = "/etc/kiln/kiln.conf";
inline constexpr const char* kDefaultInstancesPath = "/var/lib/kiln/instances";
inline constexpr const char* kDefaultLibvirtUri = "qemu:///system";

struct Settings {
  std::filesystem::path instances_path = kDefaultInstancesPath;
  // [glance]
  std::vector<http::Url> glance_api_servers;
  http::Timeouts glance_timeouts;
  http::TlsOptions glance_tls;
  std::string glance_token;  // static X-Auth-Token, "" = none
  // [keystone]: set when auth_url is; tokens then come from Keystone, and the
  // image endpoints from its catalog when [glance] api_servers is empty.
  std::optional<glance::KeystoneCredentials> keystone;
  http::TlsOptions keystone_tls;
  // [image_cache] and the fetch/verify parts of [glance]
  cache::CachePolicy cache;
  // [libvirt]
  std::string libvirt_uri = kDefaultLibvirtUri;
  std::string virt_type;  // "" = choose from libvirt's capabilities
};

// Values given on the command line; they beat the file.
struct Overrides {
  std::optional<std::filesystem::path> config_file;  // else kDefaultConfigFile if it exists
  std::optional<std::string> instances_path;
  std::optional<std::string> glance;  // one endpoint root, or a comma-separated list
  std::optional<std::string> libvirt_uri;
};

// Throws kiln::Error kConfigInvalid ("file:line: ...") for a bad file,
// kInvalidArgument for a bad flag, kIoError when a named file is unreadable.
Settings load_settings(const Overrides& overrides);

}  // namespace kiln::config
