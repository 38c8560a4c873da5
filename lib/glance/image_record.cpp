#include "kiln/glance/image_record.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "kiln/util/error.h"

namespace kiln::glance {

namespace {

using nlohmann::json;

std::string string_or_empty(const json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_string() ? it->get<std::string>() : "";
}

std::optional<std::uint64_t> size_or_null(const json& record, const char* key) {
  auto it = record.find(key);
  if (it == record.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

// Standard keys of the image schema; every other string key is a custom property.
const std::set<std::string>& schema_keys() {
  static const std::set<std::string> keys = {
      "id", "name", "status", "disk_format", "container_format", "size", "virtual_size",
      "checksum", "os_hash_algo", "os_hash_value", "visibility", "protected", "min_disk",
      "min_ram", "owner", "os_hidden", "tags", "created_at", "updated_at", "self", "file",
      "schema", "direct_url", "locations", "stores"};
  return keys;
}

}  // namespace

ImageRecord parse_image_record(const std::string& json_body) {
  json record = json::parse(json_body, nullptr, /*allow_exceptions=*/false);
  return record.get<ImageRecord>();
}

void from_json(const json& record, ImageRecord& image) {
  if (!record.is_object() || !record.contains("id") || !record["id"].is_string()) {
    throw Error(ErrorCode::kGlanceError, "Glance returned something that is not an image record");
  }
  image = ImageRecord{};
  image.id = record["id"].get<std::string>();
  image.name = string_or_empty(record, "name");
  image.status = string_or_empty(record, "status");
  image.disk_format = string_or_empty(record, "disk_format");
  image.container_format = string_or_empty(record, "container_format");
  image.size = size_or_null(record, "size");
  image.virtual_size = size_or_null(record, "virtual_size");
  image.min_disk = size_or_null(record, "min_disk").value_or(0);
  image.checksum = string_or_empty(record, "checksum");
  image.os_hash_algo = string_or_empty(record, "os_hash_algo");
  image.os_hash_value = string_or_empty(record, "os_hash_value");
  auto add_location = [&image](const json& url) {
    if (!url.is_string() || url.get<std::string>().empty()) return;
    std::string text = url.get<std::string>();
    if (std::find(image.locations.begin(), image.locations.end(), text) == image.locations.end()) {
      image.locations.push_back(std::move(text));
    }
  };
  if (auto it = record.find("direct_url"); it != record.end()) add_location(*it);
  if (auto it = record.find("locations"); it != record.end() && it->is_array()) {
    for (const json& location : *it) {
      if (location.is_object() && location.contains("url")) add_location(location["url"]);
    }
  }
  for (const auto& [key, value] : record.items()) {
    if (value.is_string() && !schema_keys().contains(key)) {
      image.properties[key] = value.get<std::string>();
    }
  }
}

void to_json(json& out, const ImageRecord& image) {
  auto string_or_null = [](const std::string& text) { return text.empty() ? json(nullptr) : json(text); };
  auto size = [](const std::optional<std::uint64_t>& bytes) { return bytes ? json(*bytes) : json(nullptr); };
  out = json::object();
  for (const auto& [key, value] : image.properties) out[key] = value;
  out.update({{"id", image.id},
              {"name", string_or_null(image.name)},
              {"status", image.status},
              {"disk_format", string_or_null(image.disk_format)},
              {"container_format", string_or_null(image.container_format)},
              {"size", size(image.size)},
              {"virtual_size", size(image.virtual_size)},
              {"min_disk", image.min_disk},
              {"checksum", string_or_null(image.checksum)},
              {"os_hash_algo", string_or_null(image.os_hash_algo)},
              {"os_hash_value", string_or_null(image.os_hash_value)}});
}

}  // namespace kiln::glance
