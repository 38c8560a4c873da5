// NetworkInterface as JSON, apart from domain_spec.cpp: nlohmann's header
// brings std::quoted, which that file's unqualified quoted() calls would find.
#include <nlohmann/json.hpp>

#include "kiln/virt/domain_spec.h"

namespace kiln::virt {

void to_json(nlohmann::json& out, const NetworkInterface& nic) {
  out = {{"type", nic.type}};
  if (!nic.bridge.empty()) out["bridge"] = nic.bridge;
  if (!nic.mac.empty()) out["mac"] = nic.mac;
  if (!nic.tap.empty()) out["tap"] = nic.tap;
  if (!nic.model.empty()) out["model"] = nic.model;
}

void from_json(const nlohmann::json& in, NetworkInterface& nic) {
  nic.type = in.at("type").get<std::string>();
  nic.bridge = in.value("bridge", std::string());
  nic.mac = in.value("mac", std::string());
  nic.tap = in.value("tap", std::string());
  nic.model = in.value("model", std::string());
}

}  // namespace kiln::virt
