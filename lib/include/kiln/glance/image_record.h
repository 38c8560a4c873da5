// What Glance says about an image (GET /v2/images/{id}).
//
// Glance v2 returns a flat JSON object; custom properties (hw_disk_bus,
// img_signature, kernel_id, ...) are top-level string keys, kept here in
// `properties`. Nullable fields are std::optional.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kiln::glance {

struct ImageRecord {
  std::string id;
  std::string name;
  std::string status;  // "active", "queued", ...
  std::string disk_format;
  std::string container_format;
  std::optional<std::uint64_t> size;          // bytes of stored data
  std::optional<std::uint64_t> virtual_size;  // may be null
  std::uint64_t min_disk = 0;                 // GiB the image needs as a root disk
  std::string checksum;                       // md5 hex, "" when null
  std::string os_hash_algo;                   // "" when null
  std::string os_hash_value;                  // "" when null
  std::map<std::string, std::string> properties;  // custom string properties
  // Where Glance's store keeps the data, when Glance shows it
  // (show_image_direct_url / show_multiple_locations): direct_url first, then
  // each locations[].url, without repeats. An RBD store's are
  // rbd://<fsid>/<pool>/<image>/<snapshot> (kiln/rbd/location.h). Read from
  // Glance only: to_json leaves them out, so an offered record carries none.
  std::vector<std::string> locations;
  // True for a controller's copy of the record, passed with a boot request
  // as nova passes image_meta, false for what Glance itself answered. The
  // image cache boots from an offered record only a base it already holds
  // from the same bytes, and asks Glance before it downloads anything.
  bool offered = false;
};

// Parses the JSON body of GET /v2/images/{id}. Throws kiln::Error
// kGlanceError when it is not an image record.
ImageRecord parse_image_record(const std::string& json_body);

// Glance's flat form, the one parse_image_record reads (custom properties as
// top-level strings). from_json throws kiln::Error kGlanceError as
// parse_image_record; neither reads nor writes `offered`.
void to_json(nlohmann::json& out, const ImageRecord& record);
void from_json(const nlohmann::json& in, ImageRecord& record);

}  // namespace kiln::glance
