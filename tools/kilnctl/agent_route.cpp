#include "agent_route.h"

#include <chrono>

#include "kiln/rpc/wire.h"
#include "kiln/util/error.h"
#include "progress.h"

namespace kilnctl {

namespace {

using nlohmann::json;

json follow_operation(const kiln::rpc::AgentClient& agent, const std::string& operation_id,
                      const std::string& progress_label) {
  kiln::cache::FetchProgress progress = progress_label.empty() ? nullptr : progress_reporter(progress_label);
  std::uint64_t shown = 0;
  // Asked again every second at most, so the progress bar moves.
  kiln::rpc::OperationFollower follower(agent, operation_id, std::chrono::seconds(1));
  while (true) {
    auto reply = follower.ask();
    if (reply.status != 200) throw_agent_error(reply.body, reply.status);
    const json& operation = reply.body;
    std::string state = operation.value("state", "");
    std::uint64_t done = operation.value("bytes_done", std::uint64_t{0});
    if (progress && done > shown) {
      shown = done;
      std::optional<std::uint64_t> total;
      if (operation["bytes_total"].is_number_unsigned()) total = operation["bytes_total"].get<std::uint64_t>();
      progress(done, total);
    }
    if (state == "succeeded") {
      finish_progress();
      return operation.value("result", json::object());
    }
    if (state == "failed") {
      finish_progress();
      throw_agent_error(operation, 0);
    }
  }
}

}  // namespace

void throw_agent_error(const json& body, unsigned status) {
  std::string code = "internal_error";
  std::string message = "kilnd answered HTTP " + std::to_string(status);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& error = body["error"];
    code = error.value("code", code);
    message = error.value("message", message);
    // A request kilnd refused (400 with a pointer): the same error as
    // kilnctl's own validation of it, exit code included.
    if (error.contains("pointer") && error["pointer"].is_string()) {
      throw kiln::rpc::ValidationError(message, error["pointer"].get<std::string>());
    }
  }
  auto known = kiln::code_from_name(code).value_or(kiln::ErrorCode::kInternalError);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& error = body["error"];
    auto field = [&](const char* name) {
      return error.contains(name) && error[name].is_string() ? error[name].get<std::string>() : std::string();
    };
    throw kiln::rpc::ContextualError(known, message, {field("uuid"), field("image_id"), field("step")});
  }
  throw kiln::Error(known, message);
}

json run_through_agent(const kiln::rpc::AgentClient& agent, const std::string& method, const std::string& target,
                       const std::optional<json>& body, const std::string& progress_label) {
  auto reply = agent.call(method, target, body);
  if (reply.status == 202 && reply.body.contains("operation_id")) {
    return follow_operation(agent, reply.body["operation_id"].get<std::string>(), progress_label);
  }
  if (reply.status >= 200 && reply.status < 300) return reply.body;
  throw_agent_error(reply.body, reply.status);
}

}  // namespace kilnctl
