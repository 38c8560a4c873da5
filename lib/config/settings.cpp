#include "kiln/config/settings.h"

#include <functional>
#include <map>
#include <sstream>

#include "kiln/util/error.h"
#include "kiln/util/ini.h"

namespace kiln::config {

namespace fs = std::filesystem;

namespace {

std::vector<http::Url> parse_endpoints(const std::string& list) {
  std::vector<http::Url> urls;
  std::stringstream stream(list);
  std::string item;
  while (std::getline(stream, item, ',')) {
    auto first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    auto last = item.find_last_not_of(" \t");
    urls.push_back(http::parse_url(item.substr(first, last - first + 1)));
  }
  if (urls.empty()) throw Error(ErrorCode::kInvalidArgument, "no endpoint given");
  return urls;
}

fs::path parse_absolute_path(const std::string& value) {
  fs::path path(value);
  if (!path.is_absolute()) throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not an absolute path");
  return path.lexically_normal();
}

std::string parse_virt_type(const std::string& value) {
  if (value != "kvm" && value != "qemu") {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not one of kvm, qemu");
  }
  return value;
}

std::string parse_nonempty(const std::string& value) {
  if (value.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
  return value;
}

using Setter = std::function<void(Settings&, const std::string&)>;

// Every key the file may hold: "section.key" -> how it sets Settings.
const std::map<std::string, Setter>& known_keys() {
  static const std::map<std::string, Setter> keys = {
      {"DEFAULT.instances_path",
       [](Settings& s, const std::string& v) { s.instances_path = parse_absolute_path(v); }},
      {"glance.api_servers",
       [](Settings& s, const std::string& v) { s.glance_api_servers = parse_endpoints(v); }},
      {"libvirt.connection_uri",
       [](Settings& s, const std::string& v) { s.libvirt_uri = parse_nonempty(v); }},
      {"libvirt.virt_type",
       [](Settings& s, const std::string& v) { s.virt_type = parse_virt_type(v); }},
  };
  return keys;
}

void apply_file(Settings& settings, const fs::path& file) {
  IniFile ini = parse_ini_file(file);
  for (const IniEntry& entry : ini.entries) {
    std::string where = ini.path + ":" + std::to_string(entry.line) + ": ";
    auto it = known_keys().find(entry.section + "." + entry.key);
    if (it == known_keys().end()) {
      throw Error(ErrorCode::kConfigInvalid,
                  where + "unknown key '" + entry.key + "' in [" + entry.section + "]");
    }
    try {
      it->second(settings, entry.value);
    } catch (const Error& error) {
      throw Error(ErrorCode::kConfigInvalid,
                  where + "bad value for [" + entry.section + "] " + entry.key + ": " + error.what());
    }
  }
}

// A flag's value, with the flag's name in any error.
template <typename Parse>
auto parse_flag(const char* flag, const std::string& value, Parse parse) {
  try {
    return parse(value);
  } catch (const Error& error) {
    throw Error(ErrorCode::kInvalidArgument, std::string("bad value for ") + flag + ": " + error.what());
  }
}

}  // namespace

Settings load_settings(const Overrides& overrides) {
  Settings settings;
  std::error_code error;
  if (overrides.config_file) {
    apply_file(settings, *overrides.config_file);
  } else if (fs::exists(kDefaultConfigFile, error)) {
    apply_file(settings, kDefaultConfigFile);
  }
  if (overrides.instances_path) {
    settings.instances_path = parse_flag("--instances-path", *overrides.instances_path, [](const std::string& v) {
      if (v.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
      return fs::absolute(v).lexically_normal();
    });
  }
  if (overrides.glance) settings.glance_api_servers = parse_flag("--glance", *overrides.glance, parse_endpoints);
  if (overrides.libvirt_uri) settings.libvirt_uri = parse_flag("--libvirt-uri", *overrides.libvirt_uri, parse_nonempty);
  return settings;
}

}  // namespace kiln::config
