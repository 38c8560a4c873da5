// kilnd's messages independent of how they travel: a request is a method, a
// path, a body and the peer that sent it; a response is a status, headers and
// a JSON body. The HTTP server (kiln/rpc/server.h) is one transport; a message
// bus can carry the same requests and responses later without touching the
// dispatch (kiln/rpc/service.h).
//
// Errors always answer `{"error": {"code": <stable kiln code>, "message": ...}}`
// (plus "pointer", the RFC 6901 pointer of the offending field, for a body
// refused by its schema), with an HTTP status that says who is at fault.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/util/error.h"

namespace kiln::rpc {

// Who sent a request: SO_PEERCRED on the Unix socket, the address on TCP.
struct Peer {
  std::optional<uid_t> uid;
  std::optional<pid_t> pid;
  std::string address;  // "unix" or "10.0.0.1:51234"

  // "uid=0 pid=1234" or "10.0.0.1:51234", for log lines.
  std::string describe() const;
};

struct Request {
  std::string method;  // "GET", "POST", "DELETE"
  std::string target;  // path and query, e.g. "/v1/instances"
  std::string body;    // raw; validated against the route's schema
  Peer peer;
};

struct Response;

// A response that is not ready yet (GET /v1/operations/{id}?wait=S): the
// transport waits, holding no thread, until `subscribe`'s wake-up is called
// (from any thread) or `up_to` has passed, then sends `answer()`. The handle
// `subscribe` returns keeps the subscription; dropping it unsubscribes (a null
// handle: it already happened, `wake` was called before subscribe returned).
struct LongPoll {
  std::function<std::shared_ptr<void>(std::function<void()> wake)> subscribe;
  std::chrono::milliseconds up_to{0};
  std::function<Response()> answer;  // cheap: reads memory only
};

struct Response {
  unsigned status = 200;
  std::map<std::string, std::string> headers;  // besides Content-Type
  // Serialised as JSON unless `text_body` is set (the Prometheus exposition).
  nlohmann::json body = nlohmann::json::object();
  std::optional<std::string> text_body;
  std::string content_type = "application/json";
  std::optional<LongPoll> long_poll;  // set: this is not the answer yet
};

// not_found 404; conflict, instance_exists 409; overloaded, shutting_down,
// interrupted 503; insufficient_space 507; invalid_* and flavor_disk_too_small
// 400; image lookups 404/409/422 (and an RBD location that is invalid, of
// another cluster or unprotected 422); upstream failures (glance, http,
// libvirt, rollback_incomplete, rbd_error) 502; everything else, io_error included, 500: a local
// fault is never a 502.
unsigned http_status_for(ErrorCode code);

// The error body for `code`. Bytes of `message` that are not UTF-8 (a path
// or body a client sent, quoted back) are written as the four characters
// \xNN, so the body is always valid JSON.
Response error_response(ErrorCode code, const std::string& message);
Response error_response(unsigned status, ErrorCode code, const std::string& message);

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view text);
// The length of the longest well-formed UTF-8 prefix of `text`.
std::size_t utf8_prefix_length(std::string_view text);
// `text` with every byte that does not belong to a well-formed UTF-8
// sequence written as \xNN (lower-case hex); valid text is unchanged.
std::string escape_invalid_utf8(std::string_view text);

}  // namespace kiln::rpc
