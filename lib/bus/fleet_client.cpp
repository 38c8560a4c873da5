#include "kiln/bus/fleet_client.h"

#include <algorithm>
#include <map>

#include "kiln/bus/topology.h"
#include "kiln/rpc/operations.h"
#include "kiln/util/error.h"

namespace kiln::bus {

namespace {

// A delivery as the controller reads it: a body that is not JSON is null.
Inbound inbound_from(const Delivery& delivery) {
  Inbound inbound;
  inbound.body = nlohmann::json::parse(delivery.message.body, nullptr, false);
  if (inbound.body.is_discarded()) inbound.body = nullptr;
  inbound.correlation_id = delivery.message.correlation_id;
  inbound.routing_key = delivery.routing_key;
  if (delivery.exchange == kEventExchange) {
    inbound.kind = delivery.routing_key == kHeartbeatKey ? Inbound::Kind::kHeartbeat : Inbound::Kind::kEvent;
  } else {
    inbound.kind = Inbound::Kind::kReply;
  }
  return inbound;
}

}  // namespace

using nlohmann::json;

FleetClient::FleetClient(const LinkOptions& options, const std::string& durable_queue) : out_(options), in_(options) {
  declare_topology(out_);
  queue_ = in_.declare_queue(durable_queue, !durable_queue.empty());
  in_.consume(queue_, 256);
}

void FleetClient::watch(const std::string& binding_key) {
  if (std::find(watched_.begin(), watched_.end(), binding_key) != watched_.end()) return;
  in_.bind(queue_, kEventExchange, binding_key);
  watched_.push_back(binding_key);
}

std::string FleetClient::send(const std::string& host, const std::string& method, const std::string& path,
                              const json& body) {
  Message message;
  message.body = request_body(method, path, body);
  message.reply_to = queue_;
  // Unique per request and client: a fresh random id (the operation ids' generator).
  message.correlation_id = rpc::new_operation_id().substr(3) + "-" + std::to_string(++sent_);
  message.message_id = message.correlation_id;
  if (host.empty()) {
    out_.publish(kFanoutExchange, "", message);
  } else {
    message.mandatory = true;  // a host that never connected has no queue: say so at once
    out_.publish(kRequestExchange, request_queue(host), message);
  }
  return message.correlation_id;
}

std::optional<Inbound> FleetClient::next(std::chrono::milliseconds timeout) {
  out_.keep_alive();  // a controller that only listens (watch, a long boot) keeps its request link
  if (!kept_.empty()) {
    Inbound inbound = std::move(kept_.front());
    kept_.pop_front();
    return inbound;
  }
  auto delivery = in_.next_delivery(timeout);
  if (!delivery) return std::nullopt;
  in_.ack(delivery->tag);
  return inbound_from(*delivery);
}

json FleetClient::call(const std::string& host, const std::string& method, const std::string& path, const json& body,
                       std::chrono::milliseconds timeout) {
  auto id = send(host, method, path, body);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::deque<Inbound> other;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kept_.insert(kept_.end(), other.begin(), other.end());
      throw Error(ErrorCode::kBusError, "no reply from host '" + host + "' within " +
                                            std::to_string(timeout.count() / 1000) + " s to " + method + " " + path);
    }
    std::optional<Inbound> inbound;
    if (!kept_.empty() && kept_.front().kind == Inbound::Kind::kReply && kept_.front().correlation_id == id) {
      inbound = std::move(kept_.front());
      kept_.pop_front();
    } else {
      // Read from the queue, not from kept_, so kept messages stay in order for next().
      out_.keep_alive();
      auto delivery = in_.next_delivery(std::min(left, std::chrono::milliseconds(200)));
      if (!delivery) continue;
      in_.ack(delivery->tag);
      inbound = inbound_from(*delivery);
    }
    if (inbound->kind == Inbound::Kind::kReply && inbound->correlation_id == id) {
      kept_.insert(kept_.end(), other.begin(), other.end());
      return inbound->body;
    }
    other.push_back(std::move(*inbound));
  }
}

std::vector<json> FleetClient::hosts(std::chrono::milliseconds window) {
  watch(kHeartbeatKey);
  std::map<std::string, json> latest;
  auto deadline = std::chrono::steady_clock::now() + window;
  std::deque<Inbound> other;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto inbound = next(left);
    if (!inbound) break;
    // Anyone may publish on the exchange: a report without a host name is not one.
    const json& body = inbound->body;
    if (inbound->kind == Inbound::Kind::kHeartbeat && body.is_object() && body.contains("host") &&
        body["host"].is_string() && !body["host"].get<std::string>().empty()) {
      latest[body["host"].get<std::string>()] = body;
    } else {
      other.push_back(std::move(*inbound));
    }
  }
  kept_.insert(kept_.end(), other.begin(), other.end());
  std::vector<json> out;
  for (auto& [host, report] : latest) out.push_back(std::move(report));
  return out;
}

std::string least_loaded(const std::vector<json>& reports) {
  const json* best = nullptr;
  // A figure a report lacks (or garbles) counts against its host.
  auto figure = [](const json& report, const char* name, std::uint64_t otherwise) {
    auto found = report.find(name);
    bool usable = found != report.end() && found->is_number_integer() && found->get<std::int64_t>() >= 0;
    return usable ? found->get<std::uint64_t>() : otherwise;
  };
  auto key = [&](const json& report) {
    return std::make_tuple(figure(report, "running_operations", UINT64_MAX), ~figure(report, "free_bytes", 0),
                           report["host"].get<std::string>());
  };
  for (const auto& report : reports) {
    if (best == nullptr || key(report) < key(*best)) best = &report;
  }
  return best ? best->value("host", std::string()) : std::string();
}

}  // namespace kiln::bus
