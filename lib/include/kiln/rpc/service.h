// The agent's RPC operations, independent of the transport: a Request in, a
// Response out (kiln/rpc/message.h). Every route calls the same lib/
// functions kilnctl calls:
//
//   POST   /v1/instances                boot (kiln::instance::provision) -> 202 operation
//   GET    /v1/instances                kiln::instance::list_instances
//   GET    /v1/instances/{uuid}         kiln::instance::show_instance
//   DELETE /v1/instances/{uuid}         kiln::instance::delete_instance -> 202 operation
//   POST   /v1/images/{image_id}/cache  pre-cache (ImageCache::acquire) -> 202 operation
//   GET    /v1/cache                    kiln::cache::list_cache (+ rpc::list_pool_bases with rbd)
//   POST   /v1/cache/prune              kiln::cache::prune_cache {"dry_run": bool} (+ rpc::prune_pool_bases)
//   GET    /v1/operations/{id}          an operation's state, progress, error or result
//   GET    /healthz, GET /metrics       liveness; Prometheus text format
//
// Bodies are validated against schemas/ before anything else runs. A boot is
// idempotent on its uuid: the same body again answers the same operation
// (unless that one failed, then it is retried), a different body 409, for as
// long as the operation is retained (kiln/rpc/operations.h: across restarts,
// at least [rpc] operation_retention_seconds) and until a delete of the uuid
// succeeds. Operations are journaled in <instances_path>/operations.log. Boots,
// deletes and pre-caches run on the OperationRunner (at most
// max_concurrent_builds at once); downloads take one of
// max_concurrent_downloads slots first. handle() blocks (disk, libvirt): a
// transport calls it off its event loop. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <semaphore>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/image_cache.h"
#include "kiln/config/settings.h"
#include "kiln/rpc/message.h"
#include "kiln/rpc/metrics.h"
#include "kiln/rpc/operations.h"
#include "kiln/rpc/steps.h"

namespace kiln::rpc {

class Backend;

class Service {
 public:
  explicit Service(const config::Settings& settings);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Never throws: every failure becomes an error Response.
  Response handle(const Request& request);

  // Takes the settings that can change while running (cache policy, Glance
  // and Keystone, libvirt URI, cache manager interval); operations already
  // running finish with the old ones. Returns what changed, in words.
  std::vector<std::string> reload(const config::Settings& settings);

  // Aging and size budget now, with the current policy (the periodic cache
  // manager). Returns the number of bases removed.
  std::size_t run_cache_manager();

  // Refuses new operations from now on and waits up to `timeout` for the
  // running ones; true when none is left.
  bool drain(std::chrono::milliseconds timeout);

  Metrics& metrics() { return metrics_; }
  config::Settings settings() const;

 private:
  Response route(const Request& request);
  Response boot(const Request& request);
  Response delete_instance(const std::string& uuid, const Request& request);
  Response precache(const std::string& image_id, const Request& request);
  Response list_instances();
  Response show_instance(const std::string& uuid);
  Response list_cache();
  Response prune(const Request& request);
  // `wait`: answer when the operation finishes, or after that long at most (a long poll).
  Response operation(const std::string& id, std::chrono::milliseconds wait);
  Response metrics_exposition();
  Response accepted(const std::shared_ptr<Operation>& operation);
  std::shared_ptr<Backend> backend() const;
  // A valid boot request, then a delete of a canonical uuid: checked
  // against the operations retained and the host, then submitted.
  Response admit_boot(const nlohmann::json& body, const instance::BootRequest& boot_request);
  Response admit_delete(const std::string& uuid, const std::shared_ptr<Backend>& backend);
  // The hooks of kiln/rpc/steps.h for `operation`: its step and bytes, and
  // one of max_concurrent_downloads slots per download.
  StepHooks hooks_for(Operation& operation);
  // Counts a finished fetch's bytes in the metrics (and logs them).
  void note_download(const Operation& operation, const std::string& image_id, std::uint64_t bytes);

  // The boot of `uuid` a new boot must agree with: the latest retained one,
  // unless a delete of the uuid succeeded after it. REQUIRES: mutex_ held.
  std::shared_ptr<Operation> standing_boot(const std::string& uuid) const;

  Metrics metrics_;
  // Held from the checks of a boot or delete to its submit(), so two requests
  // for one uuid cannot both pass them.
  mutable std::mutex mutex_;
  std::shared_ptr<Backend> backend_;
  std::counting_semaphore<4096> download_slots_;
  OperationRunner runner_;  // last: its destructor waits for operations using the rest
};

}  // namespace kiln::rpc
