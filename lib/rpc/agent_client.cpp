#include "kiln/rpc/agent_client.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <thread>

#include "kiln/util/error.h"

namespace kiln::rpc {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using local = asio::local::stream_protocol;

AgentClient::AgentClient(std::filesystem::path socket, std::chrono::milliseconds timeout)
    : socket_(std::move(socket)), timeout_(timeout) {}

AgentReply AgentClient::call(const std::string& method, const std::string& target,
                             const std::optional<nlohmann::json>& body) const {
  return call_raw(method, target, body ? body->dump() : std::string());
}

AgentReply AgentClient::call_raw(const std::string& method, const std::string& target, const std::string& body) const {
  asio::io_context io;
  beast::basic_stream<local> stream(io);
  bhttp::request<bhttp::string_body> request{bhttp::string_to_verb(method), target, 11};
  request.set(bhttp::field::host, "kilnd");
  if (!body.empty()) request.set(bhttp::field::content_type, "application/json");
  request.body() = body;
  request.prepare_payload();
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  beast::error_code failure;
  // Asynchronous operations only for the deadline; io.run() drives them here.
  stream.expires_after(timeout_);
  stream.async_connect(local::endpoint(socket_.string()), [&](beast::error_code ec) {
    if (ec) {
      failure = ec;
      return;
    }
    bhttp::async_write(stream, request, [&](beast::error_code ec, std::size_t) {
      if (ec) {
        failure = ec;
        return;
      }
      bhttp::async_read(stream, buffer, parser, [&](beast::error_code ec, std::size_t) { failure = ec; });
    });
  });
  io.run();
  if (failure) {
    throw Error(ErrorCode::kHttpError, method + " " + target + " on " + socket_.string() + ": " + failure.message());
  }
  auto& response = parser.get();
  AgentReply reply;
  reply.status = response.result_int();
  if (auto location = response.find(bhttp::field::location); location != response.end()) {
    reply.location = std::string(location->value());
  }
  reply.body = nlohmann::json::parse(response.body(), nullptr, false);
  if (reply.body.is_discarded()) reply.body = response.body();
  return reply;
}

nlohmann::json AgentClient::wait_operation(const std::string& operation_id, std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  OperationFollower follower(*this, operation_id, std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(5)));
  for (;;) {
    auto reply = follower.ask();
    if (reply.status != 200) return reply.body;
    std::string state = reply.body.value("state", "");
    if (state == "succeeded" || state == "failed" || std::chrono::steady_clock::now() > deadline) return reply.body;
  }
}

OperationFollower::OperationFollower(const AgentClient& agent, std::string operation_id, std::chrono::milliseconds wait)
    : agent_(agent), wait_(wait) {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.3f", static_cast<double>(wait.count()) / 1000);
  target_ = "/v1/operations/" + operation_id + "?wait=" + seconds;
}

AgentReply OperationFollower::ask() {
  if (pause_.count() > 0) std::this_thread::sleep_for(pause_);
  auto asked = std::chrono::steady_clock::now();
  auto reply = agent_.call("GET", target_);
  std::string state = reply.status == 200 ? reply.body.value("state", "") : "";
  bool unfinished = state == "queued" || state == "running";
  if (unfinished && std::chrono::steady_clock::now() - asked < wait_ / 2) {
    pause_ = std::clamp(pause_ * 2, std::chrono::milliseconds(2), std::chrono::milliseconds(100));
  } else {
    pause_ = std::chrono::milliseconds(0);
  }
  return reply;
}

}  // namespace kiln::rpc
