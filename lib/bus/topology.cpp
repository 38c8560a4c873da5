#include "kiln/bus/topology.h"

#include "kiln/util/error.h"

namespace kiln::bus {

std::string request_queue(const std::string& host) { return "kiln." + host; }

std::string event_key(const std::string& host, const std::string& kind) { return "kiln.events." + host + "." + kind; }

void declare_topology(AmqpLink& link) {
  link.declare_exchange(kRequestExchange, ExchangeType::kTopic);
  link.declare_exchange(kFanoutExchange, ExchangeType::kFanout);
  link.declare_exchange(kEventExchange, ExchangeType::kTopic);
  link.declare_exchange(kDeadLetterExchange, ExchangeType::kFanout);
  link.declare_queue(kDeadLetterQueue, true);
  link.bind(kDeadLetterQueue, kDeadLetterExchange, "");
}

rpc::Request parse_request(const std::string& message_body) {
  if (!rpc::is_valid_utf8(message_body)) throw Error(ErrorCode::kInvalidArgument, "the message is not UTF-8 text");
  nlohmann::json envelope = nlohmann::json::parse(message_body, nullptr, false);
  if (envelope.is_discarded()) throw Error(ErrorCode::kInvalidArgument, "the message is not JSON");
  if (!envelope.is_object()) throw Error(ErrorCode::kInvalidArgument, "the message is not a JSON object");
  auto method = envelope.find("method");
  auto path = envelope.find("path");
  if (method == envelope.end() || !method->is_string()) {
    throw Error(ErrorCode::kInvalidArgument, "the message has no string \"method\"");
  }
  if (path == envelope.end() || !path->is_string() || path->get<std::string>().rfind('/', 0) != 0) {
    throw Error(ErrorCode::kInvalidArgument, "the message has no \"path\" starting with /");
  }
  for (const auto& item : envelope.items()) {
    if (item.key() != "method" && item.key() != "path" && item.key() != "body") {
      throw Error(ErrorCode::kInvalidArgument, "the message has an unknown member \"" + item.key() + "\"");
    }
  }
  rpc::Request request;
  request.method = method->get<std::string>();
  request.target = path->get<std::string>();
  auto body = envelope.find("body");
  if (body != envelope.end() && !body->is_null()) request.body = body->dump();
  request.peer.address = "amqp";
  return request;
}

std::string request_body(const std::string& method, const std::string& path, const nlohmann::json& body) {
  nlohmann::json envelope = {{"method", method}, {"path", path}};
  if (!body.is_null()) envelope["body"] = body;
  return envelope.dump();
}

nlohmann::json reply_json(const std::string& host, const rpc::Response& response) {
  nlohmann::json reply = {{"host", host}, {"status", response.status}};
  if (response.text_body) reply["text"] = *response.text_body;
  else reply["body"] = response.body;
  return reply;
}

}  // namespace kiln::bus
