// The provisioning marker: <instance>/.kiln-provisioning, present from the
// directory's creation (under its building name, kiln/util/temporaries.h)
// until the boot has succeeded: a marker whose lock is free is a boot that
// never finished, and reconcile undoes it.
//
// Invariants: while a provision runs, its process holds an exclusive flock on
// the marker, so reconcile (in any process) can tell a running provision from
// one a crash cut short. The first line is the boot request as JSON, written
// and fsync'd (with the directory entries leading to it) before anything else
// exists in the directory; each later line
// records one finished step ({"step": "root_disk"}). Steps are appended
// without fsync: they tell an operator how far a crashed provision got, and
// reconcile decides from the marker's presence, its lock and libvirt, with
// one exception: kRollbackPending, written with sync(), says a failed boot
// could not undo its definition and is reported as such.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/util/fs.h"

namespace kiln::instance {

class ProvisioningMarker {
 public:
  // Creates the marker (it must not exist), locks it, writes `request_json`.
  ProvisioningMarker(const std::filesystem::path& path, const std::string& request_json);
  ProvisioningMarker(ProvisioningMarker&&) noexcept = default;

  // `why` (optional) explains the step, e.g. why a rollback is pending.
  void record(const std::string& step, const std::string& why = "");
  // Makes the steps recorded so far durable.
  void sync();
  // The directory holding the marker was renamed: the marker is now `path`
  // (the descriptor and its lock are unchanged).
  void relocate(const std::filesystem::path& path) { path_ = path; }
  // Unlinks the marker, still holding its lock, and fsyncs its directory: a
  // marker a crash brought back would make reconcile undo a finished boot.
  void finish();

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

// The step a failed boot records when it could not undefine its domain.
inline constexpr const char* kRollbackPending = "rollback_pending";

struct MarkerState {
  bool in_progress = false;         // a live process holds the marker's lock
  std::vector<std::string> steps;   // finished steps, oldest first
  std::string rollback_failure;     // why the undo failed, with kRollbackPending
};

// nullopt when there is no marker at `path`.
std::optional<MarkerState> read_marker(const std::filesystem::path& path);

}  // namespace kiln::instance
