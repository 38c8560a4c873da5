// A small client of kilnd's Unix socket, for kilnctl and the tests: one
// HTTP/1.1 request per call, one connection per call, a deadline on the
// whole exchange. Thread-safe: calls share nothing.
#pragma once

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

namespace kiln::rpc {

struct AgentReply {
  unsigned status = 0;
  nlohmann::json body;  // parsed JSON; a string holding the text when it is not JSON
  std::string location;  // the Location header, "" when absent
};

// The pauses between polls of an operation: 2 ms, doubling up to 100 ms. A
// warm boot (a few milliseconds in kilnd) is seen finished almost at once; a
// long download costs ten polls a second.
class PollPause {
 public:
  void wait() {
    std::this_thread::sleep_for(next_);
    next_ = std::min(next_ * 2, std::chrono::milliseconds(100));
  }

 private:
  std::chrono::milliseconds next_{2};
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

  // Polls GET /v1/operations/{id} until it is succeeded or failed, or
  // `timeout` passed (then returns the last state seen).
  nlohmann::json wait_operation(const std::string& operation_id, std::chrono::milliseconds timeout) const;

  const std::filesystem::path& socket() const { return socket_; }

 private:
  std::filesystem::path socket_;
  std::chrono::milliseconds timeout_;
};

}  // namespace kiln::rpc
