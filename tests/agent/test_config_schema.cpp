// schemas/config.schema.json against the sample config and against the loader.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "assertions.h"
#include "kiln/config/settings.h"
#include "kiln/util/ini.h"
#include "scratch.h"

namespace {

const std::string kSourceDir = KILN_SOURCE_DIR;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

nlohmann::json schema_json() { return nlohmann::json::parse(read_text(kSourceDir + "/schemas/config.schema.json")); }

// The schema's verdict on `document`: "" when valid, else valijson's reasons.
std::string schema_errors(const nlohmann::json& document) {
  static const nlohmann::json schema_document = schema_json();
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema_document);
  parser.populateSchema(schema_adapter, schema);
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(document);
  if (validator.validate(schema, target, &results)) return "";
  std::string reasons;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) {
    for (const auto& part : error.context) reasons += part;
    reasons += ": " + error.description + "\n";
  }
  return reasons.empty() ? "invalid" : reasons;
}

// The sample with its commented examples (`# key = value`) made live.
std::string uncommented_sample() {
  std::istringstream in(read_text(kSourceDir + "/systemd/kiln.conf.sample"));
  static const std::regex example(R"(^#\s*([A-Za-z_][A-Za-z0-9_]*\s*=.*)$)");
  std::string out;
  std::string line;
  std::smatch match;
  while (std::getline(in, line)) {
    out += std::regex_match(line, match, example) ? match[1].str() : line;
    out += '\n';
  }
  return out;
}

struct SampleKeys {
  nlohmann::json values = nlohmann::json::object();  // {section: {key: value}} with a value
  std::set<std::string> placeholders;                // "section.key" written as `key =`
  std::set<std::string> all;                         // "section.key", both kinds
};

SampleKeys sample_keys() {
  SampleKeys keys;
  kiln::IniFile ini = kiln::parse_ini_text(uncommented_sample(), "kiln.conf.sample");
  for (const auto& entry : ini.entries) {
    std::string name = entry.section + "." + entry.key;
    INFO(name << " is documented twice in the sample");
    REQUIRE(keys.all.insert(name).second);
    // `key =` documents a key that has no default: the loader refuses an
    // empty value for most keys, so the placeholder is not a value to check.
    if (entry.value.empty()) {
      keys.placeholders.insert(name);
    } else {
      keys.values[entry.section][entry.key] = entry.value;
    }
  }
  return keys;
}

std::set<std::string> schema_keys() {
  std::set<std::string> keys;
  const nlohmann::json schema = schema_json();  // kept alive: items() refers into it
  for (const auto& [section, body] : schema["properties"].items()) {
    for (const auto& [key, _] : body["properties"].items()) keys.insert(section + "." + key);
  }
  return keys;
}

// What kilnd would say of a config file holding `text`.
void load_config_text(const std::string& text) {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "kiln.conf", text);
  kiln::config::Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  (void)kiln::config::load_settings(overrides);
}

}  // namespace

TEST_CASE("the sample config, its examples uncommented, is valid against the config schema", "[config_schema]") {
  SampleKeys keys = sample_keys();
  std::size_t with_values = 0;
  for (const auto& [_, section] : keys.values.items()) with_values += section.size();
  REQUIRE(with_values >= 40);  // the examples were found, not silently skipped
  INFO(keys.values.dump(2));
  REQUIRE(schema_errors(keys.values) == "");
}

TEST_CASE("every key in the config schema is documented in the sample, and every sample key is in the schema",
          "[config_schema]") {
  std::set<std::string> in_schema = schema_keys();
  std::set<std::string> in_sample = sample_keys().all;
  std::string missing_from_sample;
  for (const auto& key : in_schema) {
    if (!in_sample.count(key)) missing_from_sample += key + " ";
  }
  std::string missing_from_schema;
  for (const auto& key : in_sample) {
    if (!in_schema.count(key)) missing_from_schema += key + " ";
  }
  CHECK(missing_from_sample == "");
  CHECK(missing_from_schema == "");
  REQUIRE(in_schema.size() == in_sample.size());
}

TEST_CASE("every section and key of the config schema says what it is for", "[config_schema]") {
  nlohmann::json schema = schema_json();
  REQUIRE(schema["$schema"] == "http://json-schema.org/draft-07/schema#");
  REQUIRE(schema["additionalProperties"] == false);
  for (const auto& [section, body] : schema["properties"].items()) {
    INFO("[" << section << "]");
    REQUIRE(body["additionalProperties"] == false);
    REQUIRE(body["description"].get<std::string>().size() > 10);
    for (const auto& [key, rule] : body["properties"].items()) {
      INFO(key);
      REQUIRE(rule["type"] == "string");
      REQUIRE(rule.contains("description"));
      REQUIRE(rule["description"].get<std::string>().size() > 10);
    }
  }
}

TEST_CASE("an unknown key or section fails the schema, as it fails the loader", "[config_schema]") {
  SampleKeys keys = sample_keys();
  nlohmann::json unknown_key = keys.values;
  unknown_key["glance"]["api_server"] = "http://127.0.0.1:9292";  // a typo of api_servers
  REQUIRE(schema_errors(unknown_key) != "");
  REQUIRE_KILN_ERROR_MENTIONS(load_config_text("[glance]\napi_server = http://127.0.0.1:9292\n"),
                              kiln::ErrorCode::kConfigInvalid, "unknown key 'api_server'");

  nlohmann::json unknown_section = keys.values;
  unknown_section["nova"]["instances_path"] = "/var/lib/nova/instances";
  REQUIRE(schema_errors(unknown_section) != "");
  REQUIRE_KILN_ERROR(load_config_text("[nova]\ninstances_path = /srv\n"), kiln::ErrorCode::kConfigInvalid);
}

TEST_CASE("bad values fail the schema, and the loader refuses the same values", "[config_schema]") {
  struct Case {
    const char* section;
    const char* key;
    const char* value;
  };
  // Each of these is refused by the loader too: the schema is no looser than kilnd.
  const Case cases[] = {
      {"DEFAULT", "instances_path", "relative/instances"},
      {"glance", "api_servers", "ftp://glance.example"},
      {"glance", "insecure", "maybe"},
      {"glance", "connect_timeout", "-1"},
      {"glance", "num_retries", "three"},
      {"keystone", "interface", "private"},
      {"image_cache", "max_cache_percent", "101"},
      {"image_cache", "manager_interval_seconds", "40m"},
      {"image_cache", "lock_timeout_seconds", "0"},
      {"image_cache", "remove_unused_base_images", "maybe"},
      {"image_cache", "failed_download_ttl_seconds", "10m"},
      {"rpc", "socket_mode", "0999"},
      {"rpc", "listen", "8443"},
      {"rpc", "listen", "127.0.0.1:0"},
      {"rpc", "max_connections", "0"},
      {"rpc", "max_body_bytes", "1MiB"},
      {"rpc", "max_retained_operations", "0"},
      {"rpc", "operation_retention_seconds", "1h"},
      {"rpc", "plain_tcp", "on"},
      {"rpc", "unix_socket", "kiln.sock"},
      {"tls", "cert_file", ""},
      {"libvirt", "virt_type", "xen"},
      {"libvirt", "connection_uri", ""},
      {"libvirt", "images_type", "lvm"},
      {"libvirt", "images_rbd_pool", "vms/x"},
      {"libvirt", "images_rbd_pool", "a:b"},
      {"libvirt", "images_rbd_ceph_conf", "ceph.conf"},
      {"libvirt", "rbd_user", "client.nova"},
      {"libvirt", "rbd_secret_uuid", "not-a-uuid"},
      {"libvirt", "rbd_connect_timeout", "5s"},
  };
  for (const Case& bad : cases) {
    INFO("[" << bad.section << "] " << bad.key << " = '" << bad.value << "'");
    nlohmann::json document = {{bad.section, {{bad.key, bad.value}}}};
    CHECK(schema_errors(document) != "");
    std::string text = std::string("[") + bad.section + "]\n" + bad.key + " = " + bad.value + "\n";
    CHECK_THROWS_AS(load_config_text(text), kiln::Error);
  }
}

TEST_CASE("good values pass the schema, and empty means 'none' only where the loader says so", "[config_schema]") {
  const nlohmann::json good = {
      {"DEFAULT", {{"instances_path", "/srv/kiln/instances"}}},
      {"glance", {{"api_servers", "http://10.0.0.5:9292, https://glance.example:9292"}, {"insecure", "True"}}},
      {"image_cache", {{"max_cache_percent", "100"}, {"manager_interval_seconds", "0"}}},
      {"rpc",
       {{"socket_mode", "660"},
        {"socket_group", ""},
        {"listen", "[::1]:8443"},
        {"plain_tcp", "true"},
        {"max_body_bytes", "1048576"},
        {"shutdown_timeout_seconds", "0"},
        {"operation_retention_seconds", "0"},
        {"max_retained_operations", "1"}}},
      {"libvirt", {{"virt_type", "qemu"}, {"connection_uri", "test:///default"}}},
  };
  INFO(schema_errors(good));
  REQUIRE(schema_errors(good) == "");
  REQUIRE_NOTHROW(load_config_text(
      "[DEFAULT]\ninstances_path = /srv/kiln/instances\n"
      "[glance]\napi_servers = http://10.0.0.5:9292, https://glance.example:9292\ninsecure = True\n"
      "[image_cache]\nmax_cache_percent = 100\nmanager_interval_seconds = 0\n"
      "[rpc]\nsocket_mode = 660\nsocket_group =\nlisten = [::1]:8443\nplain_tcp = true\n"
      "max_body_bytes = 1048576\nshutdown_timeout_seconds = 0\noperation_retention_seconds = 0\n"
      "max_retained_operations = 1\n"
      "[libvirt]\nvirt_type = qemu\nconnection_uri = test:///default\n"));
  REQUIRE(schema_errors({{"rpc", {{"listen", ""}}}}) == "");
  REQUIRE_NOTHROW(load_config_text("[rpc]\nlisten =\n"));
}
