#include "kiln/instance/instance_dir.h"

#include "kiln/util/uuid.h"

namespace kiln::instance {

InstanceDir::InstanceDir(const std::filesystem::path& instances_path, const std::string& uuid)
    : uuid_(normalize_uuid(uuid)), path_(instances_path / uuid_) {}

}  // namespace kiln::instance
