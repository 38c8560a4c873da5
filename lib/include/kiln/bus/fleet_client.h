// A controller's end of kiln's bus (kilnctl fleet): send requests to one
// host's queue or to every host, collect the replies, follow events and
// state reports. Same names and envelopes as kilnd (kiln/bus/topology.h).
//
// A client holds two connections (publish, consume) and one private queue
// (exclusive, auto-deleted, named by the broker) that receives the replies
// to its requests (reply_to = that queue) and whatever events it watch()es.
// Bindings are made before any request goes out, so an event caused by a
// request is never missed. A broker restart loses the private queue: calls
// then throw kBusError and the caller makes a new client (asking
// GET /v1/operations/{id} for what it was waiting on). Not thread-safe.
#pragma once

#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/bus/amqp_link.h"

namespace kiln::bus {

struct Inbound {
  enum class Kind { kReply, kEvent, kHeartbeat } kind = Kind::kReply;
  std::string correlation_id;  // replies
  std::string routing_key;     // events: kiln.events.<host>.<kind>
  nlohmann::json body;         // the reply, event or report (null when not JSON)
};

class FleetClient {
 public:
  // `durable_queue`: receive into that durable queue instead of a private
  // one, so events published while this client was away (a broker restart,
  // a controller restart) wait for it. Replies still come there.
  explicit FleetClient(const LinkOptions& options, const std::string& durable_queue = "");

  // Receives events whose key matches `binding_key` (AMQP topic pattern, e.g.
  // "kiln.events.#" or "kiln.events.h1.boot"), or state reports with "kiln.heartbeat".
  void watch(const std::string& binding_key);

  // Sends a request to `host` ("" = every host, on the fanout); returns the
  // correlation id its reply(ies) will carry.
  std::string send(const std::string& host, const std::string& method, const std::string& path,
                   const nlohmann::json& body = nullptr);

  // The next reply, event or report, or nothing after `timeout`.
  std::optional<Inbound> next(std::chrono::milliseconds timeout);

  // Sends and waits for the reply ({"host", "status", "body"}); other inbound
  // messages received meanwhile are kept for next(). Throws kBusError on timeout.
  nlohmann::json call(const std::string& host, const std::string& method, const std::string& path,
                      const nlohmann::json& body, std::chrono::milliseconds timeout);

  // The latest state report of every host heard within `window` (watch()es
  // kiln.heartbeat first), sorted by host.
  std::vector<nlohmann::json> hosts(std::chrono::milliseconds window);

 private:
  AmqpLink out_;
  AmqpLink in_;
  std::string queue_;
  std::vector<std::string> watched_;
  std::deque<Inbound> kept_;
  std::uint64_t sent_ = 0;
};

// The alive host with the fewest running operations, then the most free
// space (ties by name); "" for none. `reports` as hosts() returns them.
std::string least_loaded(const std::vector<nlohmann::json>& reports);

}  // namespace kiln::bus
