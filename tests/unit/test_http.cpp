#include <catch2/catch.hpp>

#include "assertions.h"
#include "kiln/http/client.h"
#include "kiln/http/url.h"

using kiln::ErrorCode;
using kiln::http::parse_url;

TEST_CASE("endpoint URLs parse into host, port and base path") {
  auto plain = parse_url("http://127.0.0.1:9292");
  REQUIRE(plain.host == "127.0.0.1");
  REQUIRE(plain.port == "9292");
  REQUIRE(plain.base_path.empty());

  auto with_path = parse_url("http://glance.example/image/");
  REQUIRE(with_path.port == "80");
  REQUIRE(with_path.base_path == "/image");
  REQUIRE(with_path.to_string() == "http://glance.example:80/image");

  auto ipv6 = parse_url("http://[::1]:9292");
  REQUIRE(ipv6.host == "::1");
  REQUIRE(ipv6.authority() == "[::1]:9292");
}

TEST_CASE("malformed endpoint URLs are refused with the reason") {
  for (std::string bad : {"127.0.0.1:9292", "ftp://x", "http://", "http://h:0", "http://h:99999",
                          "http://h:12ab", "http://h/?q=1", "http://user@h", "gopher://h:70"}) {
    INFO(bad);
    REQUIRE_KILN_ERROR(parse_url(bad), ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("a refused connection is an http_error naming the endpoint") {
  // Port 1 on loopback: nothing listens there on a test machine.
  kiln::http::Client client(parse_url("http://127.0.0.1:1"));
  REQUIRE_KILN_ERROR_MENTIONS(client.get("/v2/images"), ErrorCode::kHttpError, "127.0.0.1:1");
}
