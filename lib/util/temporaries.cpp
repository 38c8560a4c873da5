#include "kiln/util/temporaries.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"
#include "kiln/util/uuid.h"

namespace kiln {

namespace fs = std::filesystem;

namespace {

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

std::vector<std::pair<fs::path, std::string>> remove_stale_temporaries(const fs::path& instances_path) {
  std::vector<std::pair<fs::path, std::string>> actions;
  std::error_code error;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) entries.push_back(entry.path());
  for (const auto& path : entries) {
    auto temporary = layout::parse(layout::Place::kInstancesPath, path.filename().string());
    if (!temporary) continue;
    switch (temporary->kind) {
      case layout::Kind::kBuilding: {
        auto lock = FileLock::try_lock(layout::instance_lock_path(instances_path, temporary->subject));
        if (!lock) break;  // its provision is running
        KILN_FAILPOINT("repair.building.locked");
        remove_tree(path, "removed an instance directory a crashed provision was building", actions);
        lock->unlink_locked();
        break;
      }
      case layout::Kind::kDeleting:
        // Everything in it was being deleted; finishing the job is always right.
        remove_tree(path, "removed the rest of an instance directory a crashed delete was removing", actions);
        break;
      case layout::Kind::kDirectIoProbe:
        if (unlocked_file(path)) remove_tree(path, "removed a stale O_DIRECT probe file", actions);
        break;
      default:  // instance directories, _base, locks, the journal: not temporaries
        break;
    }
  }
  if (!actions.empty()) fsync_directory(instances_path);
  // Instance lock files: a provision unlinks its own, a crash leaves it.
  std::vector<fs::path> locks;
  for (const auto& entry : fs::directory_iterator(layout::lock_directory(instances_path), error)) {
    auto parsed = layout::parse(layout::Place::kLockDirectory, entry.path().filename().string());
    if (parsed && parsed->kind == layout::Kind::kInstanceLock) locks.push_back(entry.path());
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
