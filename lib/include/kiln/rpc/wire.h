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
// This header adds what only the wire needs: the one validator of a boot
// request (the JSON Schema, then what a schema cannot say about NICs), used
// by kilnd before it answers 202 and by kilnctl, direct or not, before
// anything starts; and the one error envelope,
// {"error": {"code", "message", "pointer"?}}, which kilnd answers with and
// kilnctl --json prints.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "kiln/instance/provision.h"
#include "kiln/rpc/schema_validation.h"
#include "kiln/util/error.h"

namespace kiln::rpc {

struct ValidBootRequest {
  nlohmann::json body;             // as sent, uuid made lowercase
  instance::BootRequest request;   // read from body
};

// Parses and validates a POST /v1/instances body: schemas/boot-request, then
// each NIC as libvirt would take it (virt::check_network_interface: a
// multicast or all-zero MAC, a bridge NIC without a bridge, ...) and MACs
// and tap names unique across NICs. Throws ValidationError whose pointer
// names the field at fault ("/nics/1/mac").
ValidBootRequest parse_boot_request(const std::string& body);
// The same for a request kilnctl built from its options.
ValidBootRequest parse_boot_request(const instance::BootRequest& request);

// {"error": {"code": "<stable code>", "message": "...", "pointer": "/nics/0/mac"}};
// "pointer" only for a ValidationError. The message is made valid UTF-8.
nlohmann::json error_envelope(const Error& error);
nlohmann::json error_envelope(ErrorCode code, const std::string& message, const std::string& pointer = "");

}  // namespace kiln::rpc
