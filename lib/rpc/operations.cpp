#include "kiln/rpc/operations.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>

#include "kiln/cache/base_info.h"
#include "kiln/rpc/operation_journal.h"
#include "kiln/rpc/wire.h"

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

Operation::Operation(std::uint64_t seq, std::string id, OperationRequest request)
    : seq_(seq), id_(std::move(id)), request_(std::move(request)), created_at_(std::chrono::system_clock::now()) {}

namespace {

std::optional<OperationState> state_from_name(const std::string& name) {
  for (auto state : {OperationState::kQueued, OperationState::kRunning, OperationState::kSucceeded,
                     OperationState::kFailed}) {
    if (state_name(state) == name) return state;
  }
  return std::nullopt;
}

std::string string_or_empty(const nlohmann::json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::shared_ptr<Operation> Operation::restore(const nlohmann::json& record) {
  try {
    auto state = state_from_name(record.at("state").get<std::string>());
    auto created_at = cache::parse_time(record.at("created_at").get<std::string>());
    if (!state || !created_at) return nullptr;
    OperationRequest request{record.at("kind").get<std::string>(), string_or_empty(record, "uuid"),
                             string_or_empty(record, "image_id"), record.value("metadata", nlohmann::json()),
                             string_or_empty(record, "request_sha256")};
    auto operation =
        std::make_shared<Operation>(record.at("seq").get<std::uint64_t>(), record.at("id").get<std::string>(),
                                    std::move(request));
    operation->state_ = *state;
    operation->created_at_ = *created_at;
    operation->step_ = record.value("step", std::string());
    operation->bytes_done_ = record.value("bytes_done", std::uint64_t{0});
    if (record.contains("bytes_total") && record["bytes_total"].is_number_unsigned()) {
      operation->bytes_total_ = record["bytes_total"].get<std::uint64_t>();
    }
    if (*state != OperationState::kQueued) {
      operation->started_at_ = cache::parse_time(record.value("started_at", std::string())).value_or(*created_at);
    }
    if (operation->finished()) {
      auto finished_at = cache::parse_time(record.at("finished_at").get<std::string>());
      if (!finished_at) return nullptr;
      operation->finished_at_ = *finished_at;
    }
    if (*state == OperationState::kFailed) {
      const auto& error = record.at("error");
      operation->error_.emplace(error.at("code").get<std::string>(), error.at("message").get<std::string>());
    }
    if (*state == OperationState::kSucceeded) operation->result_ = record.value("result", nlohmann::json::object());
    return operation;
  } catch (const nlohmann::json::exception&) {
    return nullptr;  // a record that parses but lacks what an operation needs
  }
}

OperationState Operation::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

bool Operation::finished() const {
  auto state = this->state();
  return state == OperationState::kSucceeded || state == OperationState::kFailed;
}

std::optional<std::chrono::system_clock::time_point> Operation::finished_at() const {
  std::lock_guard lock(mutex_);
  if (state_ != OperationState::kSucceeded && state_ != OperationState::kFailed) return std::nullopt;
  return finished_at_;
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

std::shared_ptr<void> Operation::when_finished(std::function<void()> wake) const {
  auto watcher = std::make_shared<std::function<void()>>(std::move(wake));
  {
    std::lock_guard lock(mutex_);
    if (state_ != OperationState::kSucceeded && state_ != OperationState::kFailed) {
      std::erase_if(watchers_, [](const auto& weak) { return weak.expired(); });
      watchers_.push_back(watcher);
      return watcher;
    }
  }
  (*watcher)();
  return nullptr;
}

void Operation::mark_running() {
  std::lock_guard lock(mutex_);
  state_ = OperationState::kRunning;
  step_ = "starting";
  started_at_ = std::chrono::system_clock::now();
}

Operation::Outcome Operation::success(nlohmann::json result) {
  return Outcome{OperationState::kSucceeded, std::move(result), std::nullopt, std::chrono::system_clock::now()};
}

Operation::Outcome Operation::failure(ErrorCode code, const std::string& message) {
  return Outcome{OperationState::kFailed, nullptr, std::make_pair(std::string(code_name(code)), message),
                 std::chrono::system_clock::now()};
}

nlohmann::json Operation::record_with(const Outcome& outcome) const {
  std::lock_guard lock(mutex_);
  auto out = render(&outcome);
  out["seq"] = seq_;
  if (!request_.request_digest.empty()) out["request_sha256"] = request_.request_digest;
  return out;
}

void Operation::finish(Outcome outcome) {
  std::vector<std::weak_ptr<std::function<void()>>> watchers;
  {
    std::lock_guard lock(mutex_);
    state_ = outcome.state;
    if (outcome.state == OperationState::kSucceeded) {
      step_ = "done";
      result_ = std::move(outcome.result);
    }
    error_ = std::move(outcome.error);
    finished_at_ = outcome.at;
    watchers.swap(watchers_);
  }
  for (const auto& weak : watchers) {
    if (auto watcher = weak.lock()) (*watcher)();
  }
}

nlohmann::json Operation::render(const Outcome* pending) const {
  OperationState state = pending ? pending->state : state_;
  bool finished = state == OperationState::kSucceeded || state == OperationState::kFailed;
  nlohmann::json out = {{"id", id_},
                        {"kind", request_.kind},
                        {"state", state_name(state)},
                        {"step", pending && state == OperationState::kSucceeded ? std::string("done") : step_},
                        {"bytes_done", bytes_done_},
                        {"bytes_total", bytes_total_ ? nlohmann::json(*bytes_total_) : nlohmann::json(nullptr)},
                        {"created_at", cache::format_time(created_at_)}};
  if (!request_.uuid.empty()) out["uuid"] = request_.uuid;
  if (!request_.image_id.empty()) out["image_id"] = request_.image_id;
  if (!request_.metadata.is_null()) out["metadata"] = request_.metadata;
  if (state != OperationState::kQueued) out["started_at"] = cache::format_time(started_at_);
  if (finished) out["finished_at"] = cache::format_time(pending ? pending->at : finished_at_);
  const auto& error = pending ? pending->error : error_;
  if (error) {
    out["error"] = error_envelope(error->first, error->second)["error"];
    // The envelope's context (kiln/rpc/wire.h): what failed, and in which step.
    add_error_context(out["error"], {request_.uuid, request_.image_id, step_});
  }
  if (state == OperationState::kSucceeded) out["result"] = pending ? pending->result : result_;
  return out;
}

nlohmann::json Operation::to_json() const {
  std::lock_guard lock(mutex_);
  return render(nullptr);
}

nlohmann::json Operation::record() const {
  std::lock_guard lock(mutex_);
  auto out = render(nullptr);
  out["seq"] = seq_;
  if (!request_.request_digest.empty()) out["request_sha256"] = request_.request_digest;
  return out;
}

OperationRunner::OperationRunner(unsigned workers, Metrics& metrics, const std::filesystem::path& journal,
                                 RetentionPolicy retention, std::size_t max_queued)
    : metrics_(metrics),
      max_queued_(max_queued),
      journal_(std::make_unique<OperationJournal>(journal)),
      retention_(retention) {
  restore();
  pool_ = std::make_unique<boost::asio::thread_pool>(workers);
}

OperationRunner::~OperationRunner() {
  {
    std::lock_guard lock(mutex_);
    draining_ = true;
  }
  pool_->join();
}

void OperationRunner::restore() {
  auto contents = journal_->take_contents();
  std::vector<std::shared_ptr<Operation>> restored;
  std::size_t unreadable = contents.skipped_lines, interrupted = 0;
  for (const auto& record : contents.records) {
    auto operation = Operation::restore(record);
    if (!operation) {
      ++unreadable;
      continue;
    }
    if (!operation->finished()) {
      // Re-running it is not clearly safe (a boot half-built before the stop
      // was cleaned by reconcile, a delete may have run partly): the caller
      // sees the truth and decides; the same boot asked again runs anew.
      auto before = operation->to_json();
      operation->finish(Operation::failure(
          ErrorCode::kInterrupted, "kilnd stopped before this operation finished (it was " +
                                       before["state"].get<std::string>() + ", step '" +
                                       before["step"].get<std::string>() +
                                       "'); its next start reconciled what was left half-built; send the request "
                                       "again to run it anew"));
      ++interrupted;
    }
    next_seq_ = std::max(next_seq_, operation->seq() + 1);
    restored.push_back(std::move(operation));
  }
  std::sort(restored.begin(), restored.end(), [](const auto& a, const auto& b) { return a->seq() < b->seq(); });
  for (const auto& operation : restored) {
    operations_.emplace(operation->id(), operation);
    index(operation);
    finished_.push_back(operation);
  }
  std::stable_sort(finished_.begin(), finished_.end(),
                   [](const auto& a, const auto& b) { return *a->finished_at() < *b->finished_at(); });
  // A bound lowered since the last run applies at once, oldest first.
  std::size_t over = 0;
  while (operations_.size() > retention_.max_operations) {
    forget_oldest();
    ++over;
  }
  std::vector<nlohmann::json> records;
  for (const auto& operation : restored) {
    if (operations_.count(operation->id())) records.push_back(operation->record());
  }
  journal_->rewrite(records);
  metrics_.set_operations_retained(operations_.size());
  spdlog::info("operations journal {}: {} operation(s) restored ({} interrupted by the stop, {} beyond "
               "max_retained_operations forgotten), {} unreadable line(s) skipped{}",
               journal_->path().string(), operations_.size(), interrupted, over, unreadable,
               contents.torn_tail ? ", a torn last line cut off" : "");
}

void OperationRunner::index(const std::shared_ptr<Operation>& operation) {
  if (operation->uuid().empty()) return;
  auto& slot = latest_[{operation->kind(), operation->uuid()}];
  if (!slot || slot->seq() < operation->seq()) slot = operation;
}

void OperationRunner::forget_oldest() {
  auto operation = finished_.front();
  finished_.pop_front();
  operations_.erase(operation->id());
  auto slot = latest_.find({operation->kind(), operation->uuid()});
  if (slot != latest_.end() && slot->second == operation) latest_.erase(slot);
  journal_->forget(operation->id());
  ++forgotten_;
  metrics_.count_operation_forgotten();
  metrics_.set_operations_retained(operations_.size());
}

std::shared_ptr<Operation> OperationRunner::submit(OperationRequest request, OperationWork work) {
  std::shared_ptr<Operation> operation;
  {
    std::lock_guard lock(mutex_);
    if (draining_) throw Error(ErrorCode::kShuttingDown, "the agent is shutting down and takes no new work");
    if (unfinished_ >= max_queued_) {
      throw Error(ErrorCode::kOverloaded, std::to_string(unfinished_) + " operations are queued or running; retry later");
    }
    auto now = std::chrono::system_clock::now();
    while (operations_.size() >= retention_.max_operations) {
      // Oldest first, and never one a caller may still be polling.
      if (finished_.empty() || now - *finished_.front()->finished_at() < retention_.minimum_age) {
        throw Error(ErrorCode::kOverloaded,
                    std::to_string(operations_.size()) + " operations are retained (max_retained_operations) and none "
                    "finished more than operation_retention_seconds (" + std::to_string(retention_.minimum_age.count()) +
                    " s) ago; retry later");
      }
      forget_oldest();
    }
    operation = std::make_shared<Operation>(next_seq_++, new_operation_id(), std::move(request));
    operations_.emplace(operation->id(), operation);
    metrics_.set_operations_retained(operations_.size());
    ++unfinished_;
  }
  try {
    // Durable before anyone learns the id.
    journal_->append(operation->record());
  } catch (...) {
    // A line that reached the file but not the disk names an operation nobody
    // was told about: the next compaction drops it.
    journal_->forget(operation->id());
    {
      std::lock_guard lock(mutex_);
      operations_.erase(operation->id());
      metrics_.set_operations_retained(operations_.size());
      --unfinished_;
    }
    idle_.notify_all();
    throw;
  }
  {
    std::lock_guard lock(mutex_);
    index(operation);
  }
  boost::asio::post(*pool_, [this, operation, work = std::move(work)] { run(operation, work); });
  return operation;
}

void OperationRunner::run(const std::shared_ptr<Operation>& operation, const OperationWork& work) {
  bool refuse = draining();
  auto started = std::chrono::steady_clock::now();
  metrics_.operation_started();
  operation->mark_running();
  Operation::Outcome outcome;
  if (refuse) {
    outcome = Operation::failure(ErrorCode::kShuttingDown, "the agent shut down before this operation started");
  } else {
    try {
      outcome = Operation::success(work(*operation));
    } catch (const Error& error) {
      outcome = Operation::failure(error.code(), error.what());
    } catch (const std::exception& error) {
      outcome = Operation::failure(ErrorCode::kInternalError, error.what());
    }
  }
  std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;
  if (outcome.error) {
    metrics_.count_failure(outcome.error->first);
    spdlog::warn("operation={} kind={} uuid={} image={} failed after {:.3f} s: [{}] {}", operation->id(),
                 operation->kind(), operation->uuid(), operation->image_id(), elapsed.count(), outcome.error->first,
                 outcome.error->second);
  }
  try {
    // On disk before anyone can see it finished: a caller never sees an end
    // that a restart would take back.
    journal_->append(operation->record_with(outcome));
  } catch (const Error& error) {
    spdlog::error("operation={} finished but the journal could not record it ({}); after a restart it reads as "
                  "interrupted",
                  operation->id(), error.what());
  }
  operation->finish(std::move(outcome));
  metrics_.operation_finished(operation->kind(), elapsed.count());
  {
    std::lock_guard lock(mutex_);
    finished_.push_back(operation);
    --unfinished_;
  }
  idle_.notify_all();
}

std::shared_ptr<Operation> OperationRunner::find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = operations_.find(id);
  return it == operations_.end() ? nullptr : it->second;
}

std::shared_ptr<Operation> OperationRunner::latest(const std::string& kind, const std::string& uuid) const {
  std::lock_guard lock(mutex_);
  auto it = latest_.find({kind, uuid});
  return it == latest_.end() ? nullptr : it->second;
}

void OperationRunner::set_retention(RetentionPolicy retention) {
  std::lock_guard lock(mutex_);
  retention_ = retention;
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

std::size_t OperationRunner::retained() const {
  std::lock_guard lock(mutex_);
  return operations_.size();
}

std::size_t OperationRunner::forgotten() const {
  std::lock_guard lock(mutex_);
  return forgotten_;
}

}  // namespace kiln::rpc
