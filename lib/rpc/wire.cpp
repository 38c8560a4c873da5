#include "kiln/rpc/wire.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "kiln/rpc/message.h"
#include "kiln/virt/domain_spec.h"

namespace kiln::rpc {

namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

[[noreturn]] void refuse(const std::string& pointer, const std::string& why) {
  throw ValidationError("the request body does not match boot-request at '" + pointer + "': " + why, pointer);
}

// virt's sentences name the field they are about; the pointer follows.
std::string field_named_by(const std::string& sentence) {
  if (sentence.starts_with("MAC address")) return "/mac";
  if (sentence.starts_with("tap name")) return "/tap";
  if (sentence.starts_with("interface type")) return "/type";
  if (sentence.starts_with("interface model")) return "/model";
  if (sentence.find("bridge") != std::string::npos) return "/bridge";
  return "";
}

// What the schema cannot say: each NIC as libvirt would take it, and no MAC
// or tap name twice (the messages are virt's, so kilnd and kilnctl say the same).
void check_nics(const std::vector<virt::NetworkInterface>& nics) {
  std::set<std::string> macs;
  std::set<std::string> taps;
  for (std::size_t i = 0; i < nics.size(); ++i) {
    const auto& nic = nics[i];
    std::string at = "/nics/" + std::to_string(i);
    try {
      virt::check_network_interface(nic);
    } catch (const Error& error) {
      refuse(at + field_named_by(error.what()), error.what());
    }
    if (!macs.insert(lowercase(nic.mac)).second) {
      refuse(at + "/mac", "MAC address '" + lowercase(nic.mac) + "' is used by two interfaces");
    }
    if (!nic.tap.empty() && !taps.insert(nic.tap).second) {
      refuse(at + "/tap", "tap name '" + nic.tap + "' is used by two interfaces");
    }
  }
}

}  // namespace

nlohmann::json instance_list_json(const std::vector<instance::InstanceReport>& reports) {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& report : reports) items.push_back(instance::to_json(report));
  return {{"instances", std::move(items)}};
}

nlohmann::json cache_list_json(const std::vector<cache::CacheEntry>& entries,
                               const std::optional<std::vector<rbd::PoolBaseInfo>>& pool_bases) {
  nlohmann::json out = {{"bases", nlohmann::json(entries)}};
  if (pool_bases) out["pool_bases"] = nlohmann::json(*pool_bases);
  return out;
}

nlohmann::json prune_json(bool dry_run, const std::vector<cache::PruneDecision>& decisions,
                          const std::optional<std::vector<rbd::PoolBasePrune>>& pool_decisions) {
  nlohmann::json out = {{"dry_run", dry_run}, {"decisions", nlohmann::json(decisions)}};
  if (pool_decisions) out["pool_decisions"] = nlohmann::json(*pool_decisions);
  return out;
}

ValidBootRequest parse_boot_request(const std::string& body) {
  ValidBootRequest valid;
  valid.body = validate_body("boot-request", body);
  valid.body["uuid"] = lowercase(valid.body["uuid"].get<std::string>());
  valid.request = valid.body.get<instance::BootRequest>();
  if (valid.request.image && valid.request.image->id != valid.request.image_id) {
    throw ValidationError("image.id '" + valid.request.image->id + "' is not image_id '" + valid.request.image_id +
                              "': the record offered is another image's",
                          "/image/id");
  }
  check_nics(valid.request.nics);
  valid.request.received_at = std::chrono::steady_clock::now();
  return valid;
}

ValidBootRequest parse_boot_request(const instance::BootRequest& request) {
  return parse_boot_request(nlohmann::json(request).dump());
}

nlohmann::json error_envelope(ErrorCode code, const std::string& message, const std::string& pointer) {
  return error_envelope(std::string(code_name(code)), message, pointer);
}

nlohmann::json error_envelope(const std::string& code, const std::string& message, const std::string& pointer) {
  // The message often quotes what the client sent (a path, a JSON parser's
  // "last read"); JSON cannot carry bytes that are not UTF-8.
  nlohmann::json error = {{"code", code}, {"message", escape_invalid_utf8(message)}};
  if (!pointer.empty()) error["pointer"] = pointer;
  return {{"error", error}};
}

void add_error_context(nlohmann::json& error, const ErrorContext& context) {
  if (!context.uuid.empty()) error["uuid"] = context.uuid;
  if (!context.image_id.empty()) error["image_id"] = context.image_id;
  if (!context.step.empty()) error["step"] = context.step;
}

nlohmann::json error_envelope(const Error& error, const ErrorContext& context) {
  nlohmann::json out = error_envelope(error.code(), error.what());
  // A pointer "" (the body is not JSON at all) is still said: the whole body.
  if (const auto* invalid = dynamic_cast<const ValidationError*>(&error)) out["error"]["pointer"] = invalid->pointer();
  add_error_context(out["error"], context);
  if (const auto* known = dynamic_cast<const ContextualError*>(&error)) add_error_context(out["error"], known->context());
  return out;
}

}  // namespace kiln::rpc
