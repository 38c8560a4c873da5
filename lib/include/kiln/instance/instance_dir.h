// The files of one instance: <instances_path>/<uuid>/...
//
// Names are Nova's, so operators' habits carry over. The uuid is always the
// canonical lowercase form checked by normalize_uuid(), so an InstanceDir can
// never point outside instances_path.
#pragma once

#include <filesystem>
#include <string>

namespace kiln::instance {

class InstanceDir {
 public:
  // Throws kiln::Error kInvalidUuid when `uuid` is not a UUID.
  InstanceDir(const std::filesystem::path& instances_path, const std::string& uuid);

  // The same instance's file names in `directory` instead of its own path:
  // where a provision builds it before renaming it into place.
  InstanceDir staged_at(const std::filesystem::path& directory) const;

  const std::string& uuid() const { return uuid_; }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path disk() const { return path_ / "disk"; }
  std::filesystem::path swap_disk() const { return path_ / "disk.swap"; }
  std::filesystem::path ephemeral_disk() const { return path_ / "disk.local"; }
  // The UEFI variable store (libvirt copies OVMF's template there on first start).
  std::filesystem::path nvram() const { return path_ / "nvram.fd"; }
  std::filesystem::path disk_info() const { return path_ / "disk.info"; }
  std::filesystem::path console_log() const { return path_ / "console.log"; }
  std::filesystem::path libvirt_xml() const { return path_ / "libvirt.xml"; }
  // Present while the directory is being built, until its boot has succeeded.
  std::filesystem::path provisioning_marker() const { return path_ / ".kiln-provisioning"; }
  // Present once a delete has begun: reconcile finishes a delete a crash cut short.
  std::filesystem::path deletion_marker() const { return path_ / ".kiln-deleting"; }

 private:
  InstanceDir() = default;
  std::string uuid_;
  std::filesystem::path path_;
};

}  // namespace kiln::instance
