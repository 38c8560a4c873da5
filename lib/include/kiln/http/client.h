// A small HTTP/1.1 client on Boost.Beast for talking to Glance.
//
// One request per call, one connection per request (Glance closes idle
// connections anyway, and a fresh connection is what a resumed download
// wants). Every network step has a deadline: connecting, sending, and each
// read of the body (an idle timeout, so a large download may take as long as
// it needs while a stalled one fails). Bodies can be streamed through a sink
// in bounded chunks, so memory does not grow with the size of an image.
// Thread-safe: calls share nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "kiln/http/url.h"

namespace kiln::http {

struct Timeouts {
  std::chrono::milliseconds connect{std::chrono::seconds(10)};
  std::chrono::milliseconds idle{std::chrono::seconds(30)};  // per send, header or body read
};

using Headers = std::map<std::string, std::string>;  // request header name -> value

struct Response {
  unsigned status = 0;
  Headers headers;  // names lowercased
  std::string body;  // empty when the body went to a sink
  std::optional<std::uint64_t> content_length;

  // The value of a header (name in lowercase), or "" when absent.
  std::string header(const std::string& lowercase_name) const;
};

// Receives body bytes in order, in chunks of at most 64 KiB.
using BodySink = std::function<void(std::span<const char>)>;

// Decides from the status and headers whether the body goes to the sink
// (true) or is collected into Response::body (false, bounded to 1 MiB).
using SinkSelector = std::function<bool(const Response& head)>;

class Client {
 public:
  explicit Client(Url endpoint, Timeouts timeouts = {});

  // GET endpoint.base_path + path. The body is collected (bounded to 1 MiB).
  // Throws kiln::Error kHttpError on connection failure, timeout or a
  // malformed reply; any HTTP status is returned, not thrown.
  Response get(const std::string& path, const Headers& headers = {}) const;

  // GET whose body goes to `sink` when `selector` accepts the head.
  // Throws kHttpError if the body ends before Content-Length.
  Response get_streamed(const std::string& path, const Headers& headers,
                        const SinkSelector& selector, const BodySink& sink) const;

  const Url& endpoint() const { return endpoint_; }

 private:
  Url endpoint_;
  Timeouts timeouts_;
};

}  // namespace kiln::http
