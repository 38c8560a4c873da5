#include "kiln/util/temporaries.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/lock.h"
#include "kiln/util/uuid.h"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kBuilding = ".building-";
constexpr std::string_view kDeleting = ".deleting-";
constexpr std::string_view kDirectIoProbe = kDirectIoProbePrefix;
constexpr std::string_view kInstanceLock = "instance-";

// ".<uuid><infix>XXXXXX" -> uuid, when the name has that shape.
std::optional<std::string> instance_of(const std::string& name, std::string_view infix) {
  constexpr std::size_t kUuidLength = 36;
  if (name.size() != 1 + kUuidLength + infix.size() + 6 || name[0] != '.') return std::nullopt;
  std::string uuid = name.substr(1, kUuidLength);
  if (name.compare(1 + kUuidLength, infix.size(), infix) != 0 || !is_canonical_uuid(uuid)) return std::nullopt;
  if (normalize_uuid(uuid) != uuid) return std::nullopt;
  return uuid;
}

// Whether nobody holds an flock on `path` (a file); false if it cannot be told.
bool unlocked_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno == ENOENT;
  UniqueFd owned(fd);
  return ::flock(fd, LOCK_EX | LOCK_NB) == 0;
}

void remove_tree(const fs::path& path, const std::string& why,
                 std::vector<std::pair<fs::path, std::string>>& actions) {
  std::error_code error;
  if (fs::remove_all(path, error) > 0 && !error) actions.emplace_back(path, why);
}

}  // namespace

std::string building_template(const fs::path& instances_path, const std::string& uuid) {
  return (instances_path / ("." + uuid + std::string(kBuilding) + "XXXXXX")).string();
}

std::string deleting_template(const fs::path& instances_path, const std::string& uuid) {
  return (instances_path / ("." + uuid + std::string(kDeleting) + "XXXXXX")).string();
}

fs::path instance_lock_path(const fs::path& instances_path, const std::string& uuid) {
  return instances_path / "locks" / (std::string(kInstanceLock) + uuid);
}

std::optional<TopLevelTemporary> parse_temporary(const std::string& name) {
  if (auto uuid = instance_of(name, kBuilding)) return TopLevelTemporary{TemporaryKind::kBuilding, *uuid};
  if (auto uuid = instance_of(name, kDeleting)) return TopLevelTemporary{TemporaryKind::kDeleting, *uuid};
  if (name.size() > kDirectIoProbe.size() && name.compare(0, kDirectIoProbe.size(), kDirectIoProbe) == 0 &&
      name.find_first_not_of("0123456789", kDirectIoProbe.size()) == std::string::npos) {
    return TopLevelTemporary{TemporaryKind::kDirectIoProbe, ""};
  }
  return std::nullopt;
}

std::vector<std::pair<fs::path, std::string>> remove_stale_temporaries(const fs::path& instances_path) {
  std::vector<std::pair<fs::path, std::string>> actions;
  std::error_code error;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    auto temporary = parse_temporary(path.filename().string());
    if (!temporary) continue;
    switch (temporary->kind) {
      case TemporaryKind::kBuilding: {
        auto lock = FileLock::try_lock(instance_lock_path(instances_path, temporary->uuid));
        if (!lock) break;  // its provision is running
        KILN_FAILPOINT("repair.building.locked");
        remove_tree(path, "removed an instance directory a crashed provision was building", actions);
        lock->unlink_locked();
        break;
      }
      case TemporaryKind::kDeleting:
        // Everything in it was being deleted; finishing the job is always right.
        remove_tree(path, "removed the rest of an instance directory a crashed delete was removing", actions);
        break;
      case TemporaryKind::kDirectIoProbe:
        if (unlocked_file(path)) remove_tree(path, "removed a stale O_DIRECT probe file", actions);
        break;
    }
  }
  if (!actions.empty()) fsync_directory(instances_path);
  // Instance lock files: a provision unlinks its own, a crash leaves it.
  std::vector<fs::path> locks;
  for (const auto& entry : fs::directory_iterator(instances_path / "locks", error)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kInstanceLock, 0) == 0 && is_canonical_uuid(name.substr(kInstanceLock.size()))) {
      locks.push_back(entry.path());
    }
  }
  for (const auto& path : locks) {
    auto lock = FileLock::try_lock(path);
    if (!lock) continue;
    lock->unlink_locked();
    actions.emplace_back(path, "removed an instance lock file nobody holds");
  }
  return actions;
}

}  // namespace kiln
