// _base/<name>.info: what a base file is, so that `ls _base` is explainable.
//
// JSON written atomically next to every image base: which Glance image it
// came from, the digests Glance recorded and the sha256 of the raw base as
// published (so rot can be detected later), when it was fetched and when it
// was last used by a boot. A base without a valid .info is suspect: repair
// re-verifies or removes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace kiln::cache {

using Clock = std::chrono::system_clock;

struct BaseInfo {
  std::string image_id;
  std::string name;
  std::string disk_format;
  std::string container_format;
  std::uint64_t source_size = 0;   // bytes downloaded from Glance
  std::uint64_t virtual_size = 0;  // bytes of the raw base (what a guest sees)
  std::string os_hash_algo;
  std::string os_hash_value;
  std::string checksum;            // Glance's md5
  std::string base_sha256;         // of the raw base file's content
  Clock::time_point fetched_at;
  Clock::time_point last_used_at;
};

std::filesystem::path info_path_for(const std::filesystem::path& base);

// Writes `<base>.info` atomically.
void save_base_info(const std::filesystem::path& base, const BaseInfo& info);

// Reads `<base>.info`; nullopt when it is missing or not a valid record.
std::optional<BaseInfo> load_base_info(const std::filesystem::path& base);

// "2026-11-25T12:00:00Z" and back; nullopt for anything else.
std::string format_time(Clock::time_point time);
std::optional<Clock::time_point> parse_time(const std::string& text);

}  // namespace kiln::cache
