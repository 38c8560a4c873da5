#include "kiln/cache/base_info.h"

#include <ctime>
#include <nlohmann/json.hpp>

#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"

namespace kiln::cache {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path info_path_for(const fs::path& base) { return layout::info_path(base); }

std::string format_time(Clock::time_point time) {
  std::time_t seconds = Clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::optional<Clock::time_point> parse_time(const std::string& text) {
  std::tm utc{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  if (end == nullptr || *end != '\0') return std::nullopt;
  return Clock::from_time_t(timegm(&utc));
}

void save_base_info(const fs::path& base, const BaseInfo& info) {
  json record = {
      {"image_id", info.image_id},       {"name", info.name},
      {"disk_format", info.disk_format}, {"container_format", info.container_format},
      {"source_size", info.source_size}, {"virtual_size", info.virtual_size},
      {"os_hash_algo", info.os_hash_algo}, {"os_hash_value", info.os_hash_value},
      {"checksum", info.checksum},
      {"fetched_at", format_time(info.fetched_at)},
      {"last_used_at", format_time(info.last_used_at)},
  };
  if (!info.base_digest.empty()) {
    record["base_digest"] = {{"algorithm", DataDigest::kAlgorithm},
                             {"covers", DataDigest::kCovers},
                             {"value", info.base_digest}};
  } else {
    record["base_sha256"] = info.base_sha256;  // a base adopted before base_digest, rewritten as it was
  }
  atomic_write_file(info_path_for(base), record.dump(2) + "\n");
}

std::optional<BaseInfo> load_base_info(const fs::path& base) {
  std::string text;
  try {
    text = read_file(info_path_for(base));
  } catch (const Error&) {
    return std::nullopt;
  }
  json record = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object()) return std::nullopt;
  try {
    BaseInfo info;
    info.image_id = record.at("image_id").get<std::string>();
    info.name = record.at("name").get<std::string>();
    info.disk_format = record.at("disk_format").get<std::string>();
    info.container_format = record.at("container_format").get<std::string>();
    info.source_size = record.at("source_size").get<std::uint64_t>();
    info.virtual_size = record.at("virtual_size").get<std::uint64_t>();
    info.os_hash_algo = record.at("os_hash_algo").get<std::string>();
    info.os_hash_value = record.at("os_hash_value").get<std::string>();
    info.checksum = record.at("checksum").get<std::string>();
    if (record.contains("base_digest")) {
      const json& digest = record.at("base_digest");
      // Another algorithm (a later kiln's) cannot be verified here: not a valid record.
      if (digest.at("algorithm") != DataDigest::kAlgorithm || digest.at("covers") != DataDigest::kCovers) {
        return std::nullopt;
      }
      info.base_digest = digest.at("value").get<std::string>();
      if (info.base_digest.size() != 32) return std::nullopt;
    } else {
      info.base_sha256 = record.at("base_sha256").get<std::string>();
      if (info.base_sha256.size() != 64) return std::nullopt;
    }
    auto fetched = parse_time(record.at("fetched_at").get<std::string>());
    auto used = parse_time(record.at("last_used_at").get<std::string>());
    if (!fetched || !used) return std::nullopt;
    info.fetched_at = *fetched;
    info.last_used_at = *used;
    return info;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

}  // namespace kiln::cache
