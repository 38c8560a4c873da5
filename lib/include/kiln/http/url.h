// Endpoint URLs: "http://host[:port][/base/path]".
//
// Only what kiln's peers need: a scheme, a host (name, IPv4, or [IPv6]), an
// optional port and a base path that requests are appended to. No query, no
// fragment, no user info: an endpoint root is configuration, not a request.
#pragma once

#include <string>
#include <string_view>

namespace kiln::http {

struct Url {
  std::string scheme;     // "http" or "https"
  std::string host;       // without brackets
  std::string port;       // always set: default 80 (http) or 443 (https)
  std::string base_path;  // "" or "/prefix" without trailing slash

  // "host:port" as sent in the Host header.
  std::string authority() const;
  std::string to_string() const;
};

// Throws kiln::Error kInvalidArgument with the reason on a malformed URL.
Url parse_url(std::string_view text);

}  // namespace kiln::http
