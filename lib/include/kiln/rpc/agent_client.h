// A small client of kilnd's Unix socket, for kilnctl and the tests: one
// HTTP/1.1 request per call, one connection per call, a deadline on the
// whole exchange. Thread-safe: calls share nothing.
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kiln::rpc {

struct AgentReply {
  unsigned status = 0;
  nlohmann::json body;  // parsed JSON; a string holding the text when it is not JSON
  std::string location;  // the Location header, "" when absent
};

class AgentClient {
 public:
  explicit AgentClient(std::filesystem::path socket, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Throws kiln::Error kHttpError when the agent cannot be reached or the
  // exchange fails; any HTTP status is returned.
  AgentReply call(const std::string& method, const std::string& target,
                  const std::optional<nlohmann::json>& body = std::nullopt) const;
  // As call(), with the body sent as given (tests send malformed bodies).
  AgentReply call_raw(const std::string& method, const std::string& target, const std::string& body) const;

  // Asks until the operation is succeeded or failed, or `timeout` passed
  // (then returns the last state seen).
  nlohmann::json wait_operation(const std::string& operation_id, std::chrono::milliseconds timeout) const;

  const std::filesystem::path& socket() const { return socket_; }

 private:
  std::filesystem::path socket_;
  std::chrono::milliseconds timeout_;
};

// Follows one operation with long polls (GET /v1/operations/{id}?wait=):
// each ask() is answered as soon as the operation finishes, or after `wait`
// with its progress. An agent that answers at once anyway (a kilnd older
// than the long poll) is asked again after 2 ms, doubling up to 100 ms.
class OperationFollower {
 public:
  OperationFollower(const AgentClient& agent, std::string operation_id, std::chrono::milliseconds wait);
  AgentReply ask();

 private:
  const AgentClient& agent_;
  std::string target_;
  std::chrono::milliseconds wait_;
  std::chrono::milliseconds pause_{0};
};

}  // namespace kiln::rpc
