// The wire: what kilnd's HTTP API and kilnctl's --json both speak.
//
// Every wire type has one serializer, next to the type itself (nlohmann's
// typed to_json/from_json, found by ADL): instance::BootRequest and
// DeleteResult (instance/provision.h), RecoverResult and ReconcileReport
// (instance/reconcile.h), InstanceReport (instance/inventory.h), DiskUsage
// (instance/disk_usage.h), cache::BaseImage (cache/image_cache.h: the cache
// fetch result), CacheEntry, VerifyResult, RepairAction, PruneDecision
// (cache/maintenance.h), virt::NetworkInterface (virt/domain_spec.h). They
// live in their modules because instance/ and cache/ must not depend on
// rpc; rpc and the tools use them.
//
// This header adds what only the wire needs: the bodies of the list-shaped
// answers (a list is always wrapped in an object named by what it holds, the
// same for GET /v1/... and kilnctl --json); the one validator of a boot
// request (the JSON Schema, then what a schema cannot say about NICs), used
// by kilnd before it answers 202 and by kilnctl, direct or not, before
// anything starts; and the one error envelope,
// {"error": {"code", "message", "pointer"?, "uuid"?, "image_id"?, "step"?}},
// which kilnd answers with (a failed operation's "error" too) and kilnctl
// --json prints.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/maintenance.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/provision.h"
#include "kiln/rbd/pool_base.h"
#include "kiln/rpc/schema_validation.h"
#include "kiln/util/error.h"

namespace kiln::rpc {

// {"instances": [InstanceReport...]}: GET /v1/instances, kilnctl instance list.
nlohmann::json instance_list_json(const std::vector<instance::InstanceReport>& reports);
// {"bases": [CacheEntry...]}: GET /v1/cache, kilnctl cache ls; with
// images_type = rbd also "pool_bases": [rbd::PoolBaseInfo...].
nlohmann::json cache_list_json(const std::vector<cache::CacheEntry>& entries,
                               const std::optional<std::vector<rbd::PoolBaseInfo>>& pool_bases = std::nullopt);
// {"dry_run": bool, "decisions": [PruneDecision...]}: POST /v1/cache/prune,
// kilnctl cache prune; with images_type = rbd also "pool_decisions":
// [rbd::PoolBasePrune...].
nlohmann::json prune_json(bool dry_run, const std::vector<cache::PruneDecision>& decisions,
                          const std::optional<std::vector<rbd::PoolBasePrune>>& pool_decisions = std::nullopt);

struct ValidBootRequest {
  nlohmann::json body;             // as sent, uuid made lowercase
  instance::BootRequest request;   // read from body
};

// Parses and validates a POST /v1/instances body: schemas/boot-request, then
// each NIC as libvirt would take it (virt::check_network_interface: a
// multicast or all-zero MAC, a bridge NIC without a bridge, ...) and MACs
// and tap names unique across NICs. Throws ValidationError whose pointer
// names the field at fault ("/nics/1/mac"). The request's received_at is
// now: the boot's image lookups need a record no older than this.
ValidBootRequest parse_boot_request(const std::string& body);
// The same for a request kilnctl built from its options.
ValidBootRequest parse_boot_request(const instance::BootRequest& request);

// What an error was about: the instance, the image, and the step of the
// operation it failed in (kilnd knows its steps; kilnctl working directly
// does not, and leaves "step" out). Empty fields are left out.
struct ErrorContext {
  std::string uuid;
  std::string image_id;
  std::string step;
};

// An error that arrived with its context (a failed kilnd operation).
class ContextualError : public Error {
 public:
  ContextualError(ErrorCode code, const std::string& message, ErrorContext context)
      : Error(code, message), context_(std::move(context)) {}
  const ErrorContext& context() const { return context_; }

 private:
  ErrorContext context_;
};

// Adds context's non-empty fields to an "error" object.
void add_error_context(nlohmann::json& error, const ErrorContext& context);

// {"error": {"code": "<stable code>", "message": "...", "pointer": "/nics/0/mac",
//  "uuid": ..., "image_id": ..., "step": ...}}: "pointer" only for a
// ValidationError, the context's fields where known (a ContextualError's own
// context wins over `context`). The message is made valid UTF-8.
nlohmann::json error_envelope(const Error& error, const ErrorContext& context = {});
nlohmann::json error_envelope(ErrorCode code, const std::string& message, const std::string& pointer = "");
// The same by code name (a failed operation keeps its code as a name, as its
// journal line does).
nlohmann::json error_envelope(const std::string& code, const std::string& message, const std::string& pointer = "");

}  // namespace kiln::rpc
