#include "kiln/http/url.h"

#include <cctype>

#include "kiln/util/error.h"

namespace kiln::http {

namespace {

[[noreturn]] void bad_url(std::string_view text, const std::string& why) {
  throw Error(ErrorCode::kInvalidArgument, "bad URL '" + std::string(text) + "': " + why);
}

bool all_digits(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string Url::authority() const {
  bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + port;
}

std::string Url::to_string() const { return scheme + "://" + authority() + base_path; }

Url parse_url(std::string_view text) {
  Url url;
  auto scheme_end = text.find("://");
  if (scheme_end == std::string_view::npos) bad_url(text, "expected scheme://host[:port]");
  url.scheme = std::string(text.substr(0, scheme_end));
  if (url.scheme != "http" && url.scheme != "https") bad_url(text, "unsupported scheme '" + url.scheme + "'");
  std::string_view rest = text.substr(scheme_end + 3);
  if (rest.find_first_of("?#@") != std::string_view::npos) {
    bad_url(text, "query, fragment and user info are not allowed in an endpoint");
  }
  auto path_start = rest.find('/');
  std::string_view authority = rest.substr(0, path_start);
  std::string_view path = path_start == std::string_view::npos ? "" : rest.substr(path_start);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.base_path = std::string(path);

  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) bad_url(text, "unterminated [IPv6] host");
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_url(text, "unexpected text after ]");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) bad_url(text, "missing host");
  if (port.empty()) {
    url.port = url.scheme == "https" ? "443" : "80";
  } else if (!all_digits(port) || port.size() > 5 || std::stoi(std::string(port)) > 65535 ||
             std::stoi(std::string(port)) == 0) {
    bad_url(text, "bad port '" + std::string(port) + "'");
  } else {
    url.port = std::string(port);
  }
  return url;
}

}  // namespace kiln::http
