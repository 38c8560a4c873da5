// A small HTTP/1.1 client on Boost.Beast for talking to Glance and Keystone.
//
// One request per call, one connection per request (Glance closes idle
// connections anyway, and a fresh connection is what a resumed download
// wants). https endpoints verify the server's certificate chain (system CAs
// or a configured CA file) and its host name or IP address; verification can
// only be turned off explicitly. Every network step has a deadline:
// connecting (TLS handshake included), sending, and each read (an idle
// timeout, so a large download may take as long as it needs while a stalled
// one fails). Bodies can be streamed through a sink in bounded chunks, so
// memory does not grow with the size of an image. Thread-safe: calls share
// nothing.
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

struct TlsOptions {
  std::string ca_file;  // "" = the system's trusted CAs
  bool verify = true;   // false only when an operator says so ([glance] insecure)
};

using Headers = std::map<std::string, std::string>;  // request header name -> value

struct Request {
  std::string method = "GET";
  std::string path;  // appended to the endpoint's base path
  Headers headers;
  std::string body;  // sent with Content-Length when not empty
};

struct Response {
  unsigned status = 0;
  Headers headers;   // names lowercased
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
  explicit Client(Url endpoint, Timeouts timeouts = {}, TlsOptions tls = {});

  // Sends `request`; the response body is collected (bounded to 1 MiB).
  // Throws kiln::Error kHttpError on connection failure, TLS failure, timeout
  // or a malformed reply; any HTTP status is returned, not thrown.
  Response send(const Request& request) const;
  Response get(const std::string& path, const Headers& headers = {}) const;

  // As send(), but the body goes to `sink` when `selector` accepts the head.
  // Throws kHttpError if the body ends before Content-Length.
  Response send_streamed(const Request& request, const SinkSelector& selector,
                         const BodySink& sink) const;

  const Url& endpoint() const { return endpoint_; }

 private:
  Url endpoint_;
  Timeouts timeouts_;
  TlsOptions tls_;
};

}  // namespace kiln::http
