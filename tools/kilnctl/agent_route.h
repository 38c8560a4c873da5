// kilnctl through kilnd: when an agent answers on the socket, the commands
// that change the host (boot, delete, cache fetch, cache prune) are sent to
// it, so its bounded worker pool, single flight and metrics see them; kilnctl
// follows the operation to its end. Read-only commands work on the directory
// either way: the filesystem and libvirt are the state, so the answer is the
// same (and the JSON too: one serializer, kiln/rpc/wire.h).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kiln/rpc/agent_client.h"

namespace kilnctl {

// Sends the request; a 202 names an operation, which is polled (with a
// progress bar for its bytes on a terminal when `progress_label` is set)
// until it ends. Returns the operation's result, or the reply's body for a
// 200. Throws kiln::Error with the agent's code and message on failure.
nlohmann::json run_through_agent(const kiln::rpc::AgentClient& agent, const std::string& method,
                                 const std::string& target, const std::optional<nlohmann::json>& body,
                                 const std::string& progress_label);

// kilnd's error envelope (`body`, answered with `status`; 0 for a failed
// operation) as the kiln::Error kilnctl reports: its code, message and
// context, and a ValidationError (exit 2) for a refused request with a
// pointer. Also for replies that came over the bus (kilnctl fleet).
[[noreturn]] void throw_agent_error(const nlohmann::json& body, unsigned status);

}  // namespace kilnctl
