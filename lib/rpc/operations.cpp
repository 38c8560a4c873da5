#include "kiln/rpc/operations.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "kiln/cache/base_info.h"

namespace kiln::rpc {

std::string state_name(OperationState state) {
  switch (state) {
    case OperationState::kQueued: return "queued";
    case OperationState::kRunning: return "running";
    case OperationState::kSucceeded: return "succeeded";
    case OperationState::kFailed: return "failed";
  }
  return "unknown";
}

std::string new_operation_id() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw Error(ErrorCode::kInternalError, "no random bytes for an operation id");
  static const char* digits = "0123456789abcdef";
  std::string id = "op-";
  for (unsigned char byte : bytes) {
    id += digits[byte >> 4];
    id += digits[byte & 15];
  }
  return id;
}

Operation::Operation(std::string id, std::string kind, std::string uuid, std::string image_id)
    : id_(std::move(id)), kind_(std::move(kind)), uuid_(std::move(uuid)), image_id_(std::move(image_id)),
      created_at_(std::chrono::system_clock::now()) {}

OperationState Operation::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

bool Operation::finished() const {
  auto state = this->state();
  return state == OperationState::kSucceeded || state == OperationState::kFailed;
}

void Operation::set_step(const std::string& step) {
  std::lock_guard lock(mutex_);
  step_ = step;
}

void Operation::set_bytes(std::uint64_t done, std::optional<std::uint64_t> total) {
  std::lock_guard lock(mutex_);
  bytes_done_ = done;
  bytes_total_ = total;
}

void Operation::set_metadata(nlohmann::json metadata) {
  std::lock_guard lock(mutex_);
  metadata_ = std::move(metadata);
}

bool Operation::wait(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return finished_changed_.wait_for(lock, timeout, [this] {
    return state_ == OperationState::kSucceeded || state_ == OperationState::kFailed;
  });
}

void Operation::mark_running() {
  std::lock_guard lock(mutex_);
  state_ = OperationState::kRunning;
  step_ = "starting";
  started_at_ = std::chrono::system_clock::now();
}

void Operation::mark_succeeded(nlohmann::json result) {
  {
    std::lock_guard lock(mutex_);
    state_ = OperationState::kSucceeded;
    step_ = "done";
    result_ = std::move(result);
    finished_at_ = std::chrono::system_clock::now();
  }
  finished_changed_.notify_all();
}

void Operation::mark_failed(ErrorCode code, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    state_ = OperationState::kFailed;
    error_.emplace(std::string(code_name(code)), message);
    finished_at_ = std::chrono::system_clock::now();
  }
  finished_changed_.notify_all();
}

nlohmann::json Operation::to_json() const {
  std::lock_guard lock(mutex_);
  nlohmann::json out = {{"id", id_},
                        {"kind", kind_},
                        {"state", state_name(state_)},
                        {"step", step_},
                        {"bytes_done", bytes_done_},
                        {"bytes_total", bytes_total_ ? nlohmann::json(*bytes_total_) : nlohmann::json(nullptr)},
                        {"created_at", cache::format_time(created_at_)}};
  if (!uuid_.empty()) out["uuid"] = uuid_;
  if (!image_id_.empty()) out["image_id"] = image_id_;
  if (!metadata_.is_null()) out["metadata"] = metadata_;
  if (state_ != OperationState::kQueued) out["started_at"] = cache::format_time(started_at_);
  if (state_ == OperationState::kSucceeded || state_ == OperationState::kFailed) {
    out["finished_at"] = cache::format_time(finished_at_);
  }
  if (error_) out["error"] = {{"code", error_->first}, {"message", error_->second}};
  if (state_ == OperationState::kSucceeded) out["result"] = result_;
  return out;
}

OperationRunner::OperationRunner(unsigned workers, Metrics& metrics, std::size_t max_queued)
    : metrics_(metrics), max_queued_(max_queued), pool_(std::make_unique<boost::asio::thread_pool>(workers)) {}

OperationRunner::~OperationRunner() {
  {
    std::lock_guard lock(mutex_);
    draining_ = true;
  }
  pool_->join();
}

std::shared_ptr<Operation> OperationRunner::submit(const std::string& kind, const std::string& uuid,
                                                   const std::string& image_id, OperationWork work) {
  auto operation = std::make_shared<Operation>(new_operation_id(), kind, uuid, image_id);
  {
    std::lock_guard lock(mutex_);
    if (draining_) throw Error(ErrorCode::kShuttingDown, "the agent is shutting down and takes no new work");
    if (unfinished_ >= max_queued_) {
      throw Error(ErrorCode::kOverloaded, std::to_string(unfinished_) + " operations are queued or running; retry later");
    }
    if (operations_.size() >= kRetainedOperations) {
      // Memory stays bounded: finished operations are forgotten first (their
      // effects are on disk and in libvirt; GET on them then answers 404).
      std::erase_if(operations_, [](const auto& entry) { return entry.second->finished(); });
    }
    operations_.emplace(operation->id(), operation);
    ++unfinished_;
  }
  boost::asio::post(*pool_, [this, operation, work = std::move(work)] { run(operation, work); });
  return operation;
}

void OperationRunner::run(const std::shared_ptr<Operation>& operation, const OperationWork& work) {
  bool refuse = draining();
  auto started = std::chrono::steady_clock::now();
  metrics_.operation_started();
  if (refuse) {
    operation->mark_running();
    operation->mark_failed(ErrorCode::kShuttingDown, "the agent shut down before this operation started");
    metrics_.count_failure(code_name(ErrorCode::kShuttingDown));
  } else {
    operation->mark_running();
    try {
      operation->mark_succeeded(work(*operation));
    } catch (const Error& error) {
      operation->mark_failed(error.code(), error.what());
      metrics_.count_failure(error.code_name());
    } catch (const std::exception& error) {
      operation->mark_failed(ErrorCode::kInternalError, error.what());
      metrics_.count_failure(code_name(ErrorCode::kInternalError));
    }
  }
  std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;
  if (operation->state() == OperationState::kFailed) {
    auto record = operation->to_json();
    spdlog::warn("operation={} kind={} uuid={} image={} failed after {:.3f} s: [{}] {}", operation->id(),
                 operation->kind(), operation->uuid(), operation->image_id(), elapsed.count(),
                 record["error"]["code"].get<std::string>(), record["error"]["message"].get<std::string>());
  }
  metrics_.operation_finished(operation->kind(), elapsed.count());
  {
    std::lock_guard lock(mutex_);
    --unfinished_;
  }
  idle_.notify_all();
}

std::shared_ptr<Operation> OperationRunner::find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = operations_.find(id);
  return it == operations_.end() ? nullptr : it->second;
}

bool OperationRunner::drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  draining_ = true;
  return idle_.wait_for(lock, timeout, [this] { return unfinished_ == 0; });
}

bool OperationRunner::draining() const {
  std::lock_guard lock(mutex_);
  return draining_;
}

std::size_t OperationRunner::unfinished() const {
  std::lock_guard lock(mutex_);
  return unfinished_;
}

}  // namespace kiln::rpc
