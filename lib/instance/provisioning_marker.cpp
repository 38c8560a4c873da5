#include "provisioning_marker.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/util/error.h"

namespace kiln::instance {

ProvisioningMarker::ProvisioningMarker(const std::filesystem::path& path, const std::string& request_json)
    : path_(path), fd_(open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644)) {
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) throw_io_error("cannot lock " + path.string(), errno);
  std::string line = request_json + "\n";
  write_all(fd_.get(), line, path_);
  // The marker, the instance directory's entry for it, and the instances
  // path's entry for the directory: durable before anything else is written.
  fsync_together({path, path.parent_path(), path.parent_path().parent_path()});
}

void ProvisioningMarker::record(const std::string& step, const std::string& why) {
  nlohmann::json entry = {{"step", step}};
  if (!why.empty()) entry["why"] = why;
  std::string line = entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_all(fd_.get(), line, path_);
}

void ProvisioningMarker::sync() { fsync_file(fd_.get(), path_); }

void ProvisioningMarker::finish() {
  if (::unlink(path_.c_str()) != 0) throw_io_error("cannot remove " + path_.string(), errno);
  fsync_directory(path_.parent_path());
}

std::optional<MarkerState> read_marker(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw_io_error("cannot open " + path.string(), errno);
  }
  UniqueFd owned(fd);
  MarkerState state;
  state.in_progress = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  std::istringstream lines(read_file(path));
  std::string line;
  std::getline(lines, line);  // the request
  while (std::getline(lines, line)) {
    auto step = nlohmann::json::parse(line, nullptr, false);
    if (!step.is_object() || !step.contains("step") || !step["step"].is_string()) continue;
    state.steps.push_back(step["step"]);
    if (step["step"] == kRollbackPending && step.contains("why") && step["why"].is_string()) {
      state.rollback_failure = step["why"];
    }
  }
  return state;
}

}  // namespace kiln::instance
