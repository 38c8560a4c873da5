// _base/<name>.info: what a base file is, so that `ls _base` is explainable.
//
// JSON written atomically next to every image base: which Glance image it
// came from, the digests Glance recorded, the digest of the raw base as
// published (so rot can be detected later), when it was fetched and when it
// was last used by a boot. A base without a valid .info is suspect: repair
// re-verifies or removes it.
//
// The base's digest is written as
//   "base_digest": {"algorithm": "xxh3-128", "covers": "data-extents", "value": "<32 hex>"}
// (kiln/util/data_digest.h says what it covers and why XXH3: it scrubs for
// rot, costs only the data to compute, and is computed while the base is
// written). .info files written before it carry "base_sha256" (sha256 of
// every byte of the base) instead; they are still read, and verified that way.
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
  // Exactly one of these two is set: the digest of the base's content.
  std::string base_digest;         // DataDigest (xxh3-128 over data extents), hex
  std::string base_sha256;         // sha256 of every byte: .info files written before base_digest
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
