#include "kiln/disk/disk_info.h"

#include <nlohmann/json.hpp>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln::disk {

DiskInfo DiskInfo::load(const std::filesystem::path& file) {
  DiskInfo info;
  std::error_code error;
  if (!std::filesystem::exists(file, error)) return info;
  auto parsed = nlohmann::json::parse(read_file(file), nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    throw Error(ErrorCode::kIoError, file.string() + " is not a JSON object");
  }
  for (const auto& [path, format] : parsed.items()) {
    if (!format.is_string()) {
      throw Error(ErrorCode::kIoError, file.string() + ": format of " + path + " is not a string");
    }
    info.entries_[path] = format.get<std::string>();
  }
  return info;
}

void DiskInfo::add(const std::filesystem::path& disk, const std::string& format) {
  if (!disk.is_absolute()) {
    throw Error(ErrorCode::kInvalidArgument, "disk.info needs absolute paths, got " + disk.string());
  }
  auto [it, inserted] = entries_.emplace(disk.string(), format);
  if (!inserted && it->second != format) {
    throw Error(ErrorCode::kInvalidArgument, "disk.info already records " + disk.string() +
                                                 " as " + it->second + "; refusing to change it to " +
                                                 format);
  }
}

void DiskInfo::add_rbd(const std::string& pool, const std::string& image) {
  std::string key = "rbd:" + pool + "/" + image;
  auto [it, inserted] = entries_.emplace(key, "raw");
  if (!inserted && it->second != "raw") {
    throw Error(ErrorCode::kInvalidArgument, "disk.info already records " + key + " as " + it->second);
  }
}

std::string DiskInfo::to_json() const { return nlohmann::json(entries_).dump() + "\n"; }

void DiskInfo::save(const std::filesystem::path& file, Durability durability) const {
  if (durability == Durability::kSynced) {
    atomic_write_file(file, to_json());
  } else {
    write_new_file(file, to_json());
  }
}

}  // namespace kiln::disk
