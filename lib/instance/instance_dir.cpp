#include "kiln/instance/instance_dir.h"

#include "kiln/util/layout.h"
#include "kiln/util/uuid.h"

namespace kiln::instance {

InstanceDir::InstanceDir(const std::filesystem::path& instances_path, const std::string& uuid)
    : uuid_(normalize_uuid(uuid)), path_(layout::instance_directory(instances_path, uuid_)) {}

InstanceDir InstanceDir::staged_at(const std::filesystem::path& directory) const {
  InstanceDir staged;
  staged.uuid_ = uuid_;
  staged.path_ = directory;
  return staged;
}

}  // namespace kiln::instance
