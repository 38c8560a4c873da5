// The files of one instance: <instances_path>/<uuid>/...
//
// Names are Nova's, so operators' habits carry over (spelled in
// kiln/util/layout.h, like every name under instances_path). The uuid is always the
// canonical lowercase form checked by normalize_uuid(), so an InstanceDir can
// never point outside instances_path.
#pragma once

#include <filesystem>
#include <string>

#include "kiln/util/layout.h"

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
  std::filesystem::path disk() const { return layout::member(path_, layout::kRootDisk); }
  std::filesystem::path swap_disk() const { return layout::member(path_, layout::kSwapDisk); }
  std::filesystem::path ephemeral_disk() const { return layout::member(path_, layout::kEphemeralDisk); }
  // The UEFI variable store (libvirt copies OVMF's template there on first start).
  std::filesystem::path nvram() const { return layout::member(path_, layout::kNvram); }
  std::filesystem::path disk_info() const { return layout::member(path_, layout::kDiskInfo); }
  std::filesystem::path console_log() const { return layout::member(path_, layout::kConsoleLog); }
  std::filesystem::path libvirt_xml() const { return layout::member(path_, layout::kLibvirtXml); }
  // Present while the directory is being built, until its boot has succeeded.
  std::filesystem::path provisioning_marker() const { return layout::member(path_, layout::kProvisioningMarker); }
  // Present once a delete has begun: reconcile finishes a delete a crash cut short.
  std::filesystem::path deletion_marker() const { return layout::member(path_, layout::kDeletionMarker); }

 private:
  InstanceDir() = default;
  std::string uuid_;
  std::filesystem::path path_;
};

}  // namespace kiln::instance
