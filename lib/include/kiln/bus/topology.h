// The names kiln's bus uses on RabbitMQ, and the envelope its messages
// travel in: what kilnd (kiln/bus/agent_bus.h) and a controller
// (kiln/bus/fleet_client.h) must agree on, in one place.
//
// Exchanges (all durable): "kiln" (topic) carries requests to one host, by
// routing key kiln.<host>; "kiln.all" (fanout) carries requests to every
// host; "kiln.events" (topic) carries operation events,
// kiln.events.<host>.<kind>, and state reports, kiln.heartbeat; "kiln.dead"
// (fanout) takes messages kilnd cannot read, into the durable queue
// "kiln.dead", each with an x-kiln-error header saying why.
//
// Each kilnd consumes one durable queue, kiln.<host>, bound to both request
// exchanges. A request is the HTTP API's request as JSON: {"method", "path",
// "body"} (body: the JSON body, absent for none); the reply, sent to the
// request's reply_to with its correlation_id, is {"host", "status", "body"}
// exactly as HTTP would answer. An event is {"host", "operation"} (the
// operation as GET /v1/operations/{id} shows it); a heartbeat is {"host",
// "version", "free_bytes", "cache_entries", "running_operations",
// "sent_at"} (unix seconds).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "kiln/bus/amqp_link.h"
#include "kiln/rpc/message.h"

namespace kiln::bus {

inline constexpr const char* kRequestExchange = "kiln";
inline constexpr const char* kFanoutExchange = "kiln.all";
inline constexpr const char* kEventExchange = "kiln.events";
inline constexpr const char* kDeadLetterExchange = "kiln.dead";
inline constexpr const char* kDeadLetterQueue = "kiln.dead";
inline constexpr const char* kHeartbeatKey = "kiln.heartbeat";
inline constexpr const char* kErrorHeader = "x-kiln-error";

// kiln.<host>: the queue and the routing key of a host's requests.
std::string request_queue(const std::string& host);
// kiln.events.<host>.<kind>
std::string event_key(const std::string& host, const std::string& kind);

// Declares the four exchanges and the dead-letter queue (idempotent: every
// (re)connect does it).
void declare_topology(AmqpLink& link);

// A request message's body back as a transport-free request. Throws
// kInvalidArgument, saying what is wrong, for anything that is not an
// envelope (the caller dead-letters it).
rpc::Request parse_request(const std::string& message_body);
std::string request_body(const std::string& method, const std::string& path, const nlohmann::json& body);

nlohmann::json reply_json(const std::string& host, const rpc::Response& response);

}  // namespace kiln::bus
