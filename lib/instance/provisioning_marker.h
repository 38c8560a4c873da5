// The provisioning marker: <instance>/.kiln-provisioning, present from the
// directory's creation until its domain is defined.
//
// Invariants: while a provision runs, its process holds an exclusive flock on
// the marker, so reconcile (in any process) can tell a running provision from
// one a crash cut short. The first line is the boot request as JSON, written
// and fsync'd (with the directory entries leading to it) before anything else
// exists in the directory; each later line
// records one finished step ({"step": "root_disk"}). Steps are appended
// without fsync: they tell an operator how far a crashed provision got, but
// no decision depends on them (reconcile decides from the marker's presence,
// its lock and libvirt).
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

  void record(const std::string& step);
  // Unlinks the marker, still holding its lock. Not fsync'd: should a crash
  // bring the marker back, its domain is defined and reconcile removes it.
  void finish();

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

struct MarkerState {
  bool in_progress = false;         // a live process holds the marker's lock
  std::vector<std::string> steps;   // finished steps, oldest first
};

// nullopt when there is no marker at `path`.
std::optional<MarkerState> read_marker(const std::filesystem::path& path);

}  // namespace kiln::instance
