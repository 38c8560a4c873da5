// Long work (boot, delete, pre-cache) as operations: queued on a bounded
// worker pool, observable while they run, remembered after they end.
//
// An Operation is what GET /v1/operations/{id} shows: its kind, state
// (queued, running, succeeded, failed), the current step, bytes done and
// total of a download, the error's code and message or the result. The
// OperationRunner runs at most `workers` operations at once (nova's
// max_concurrent_builds); more wait in a queue of bounded length, beyond
// which submit() refuses with kOverloaded. drain() stops taking work and
// waits for what runs; queued operations that had not started fail with
// shutting_down. Thread-safe throughout. Operations are kept in memory only
// (finished ones are forgotten once kRetainedOperations are held): after a
// restart the filesystem and libvirt are the record.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kiln/rpc/metrics.h"
#include "kiln/util/error.h"

namespace boost::asio {
class thread_pool;
}

namespace kiln::rpc {

inline constexpr std::size_t kRetainedOperations = 10000;

enum class OperationState { kQueued, kRunning, kSucceeded, kFailed };
std::string state_name(OperationState state);

class Operation {
 public:
  Operation(std::string id, std::string kind, std::string uuid, std::string image_id);

  const std::string& id() const { return id_; }
  const std::string& kind() const { return kind_; }
  const std::string& uuid() const { return uuid_; }
  const std::string& image_id() const { return image_id_; }

  OperationState state() const;
  bool finished() const;
  void set_step(const std::string& step);
  void set_bytes(std::uint64_t done, std::optional<std::uint64_t> total);
  void set_metadata(nlohmann::json metadata);

  // Blocks until the operation has finished or `timeout` passed; true if finished.
  bool wait(std::chrono::milliseconds timeout) const;

  nlohmann::json to_json() const;

 private:
  friend class OperationRunner;
  void mark_running();
  void mark_succeeded(nlohmann::json result);
  void mark_failed(ErrorCode code, const std::string& message);

  const std::string id_, kind_, uuid_, image_id_;
  mutable std::mutex mutex_;
  mutable std::condition_variable finished_changed_;
  OperationState state_ = OperationState::kQueued;
  std::string step_ = "queued";
  std::uint64_t bytes_done_ = 0;
  std::optional<std::uint64_t> bytes_total_;
  std::optional<std::pair<std::string, std::string>> error_;
  nlohmann::json result_;
  nlohmann::json metadata_;
  std::chrono::system_clock::time_point created_at_, started_at_, finished_at_;
};

// What an operation does; returns its result, throws kiln::Error on failure.
using OperationWork = std::function<nlohmann::json(Operation&)>;

class OperationRunner {
 public:
  OperationRunner(unsigned workers, Metrics& metrics, std::size_t max_queued = 1024);
  ~OperationRunner();  // waits for running operations
  OperationRunner(const OperationRunner&) = delete;
  OperationRunner& operator=(const OperationRunner&) = delete;

  // Creates an operation and queues `work`. Throws kShuttingDown after
  // drain(), kOverloaded when the queue is full.
  std::shared_ptr<Operation> submit(const std::string& kind, const std::string& uuid, const std::string& image_id,
                                    OperationWork work);
  std::shared_ptr<Operation> find(const std::string& id) const;

  // Stops taking work; waits up to `timeout` for running operations.
  // Returns true when nothing runs any more.
  bool drain(std::chrono::milliseconds timeout);
  bool draining() const;
  std::size_t unfinished() const;

 private:
  void run(const std::shared_ptr<Operation>& operation, const OperationWork& work);

  Metrics& metrics_;
  const std::size_t max_queued_;
  std::unique_ptr<boost::asio::thread_pool> pool_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  std::map<std::string, std::shared_ptr<Operation>> operations_;
  std::size_t unfinished_ = 0;
  bool draining_ = false;
};

// A fresh random id such as "op-3f2a…" (128 bits from the system's CSPRNG).
std::string new_operation_id();

}  // namespace kiln::rpc
