// kiln/util/text.h (printing names from Glance and requests) and the domain
// name template (virt::domain_name_from_template).
#include <catch2/catch.hpp>

#include "assertions.h"
#include "kiln/util/text.h"
#include "kiln/virt/domain_spec.h"

using kiln::ErrorCode;

TEST_CASE("printable escapes control characters, backslashes and invalid UTF-8, and keeps the rest") {
  REQUIRE(kiln::printable("web-1") == "web-1");
  REQUIRE(kiln::printable("a\nb") == "a\\nb");  // cannot forge a row
  REQUIRE(kiln::printable("\x1b[2Jgone") == "\\e[2Jgone");  // cannot clear the screen
  REQUIRE(kiln::printable("tab\there\r") == "tab\\there\\r");
  REQUIRE(kiln::printable(std::string("nul\0x", 5)) == "nul\\x00x");
  REQUIRE(kiln::printable("del\x7f") == "del\\x7f");
  REQUIRE(kiln::printable("back\\slash") == "back\\\\slash");  // an escape can be told from the text
  REQUIRE(kiln::printable("\xc2\x9b" "2J") == "\\u{009b}2J");  // C1 CSI
  REQUIRE(kiln::printable("caf\xc3\xa9 \xe2\x9c\x93") == "caf\xc3\xa9 \xe2\x9c\x93");
  REQUIRE(kiln::printable("bad\xff\xfe") == "bad\\xff\\xfe");
  REQUIRE(kiln::printable("\xc0\xaf") == "\\xc0\\xaf");  // overlong '/'
  REQUIRE(kiln::printable("\xe2\x9c") == "\\xe2\\x9c");  // truncated
}

TEST_CASE("is_utf8 accepts well-formed UTF-8 only") {
  REQUIRE(kiln::is_utf8(""));
  REQUIRE(kiln::is_utf8("plain"));
  REQUIRE(kiln::is_utf8("\xf0\x9f\x98\x80"));
  REQUIRE_FALSE(kiln::is_utf8("\xff"));
  REQUIRE_FALSE(kiln::is_utf8("\xed\xa0\x80"));      // a surrogate
  REQUIRE_FALSE(kiln::is_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  REQUIRE_FALSE(kiln::is_utf8("\xc1\xbf"));          // overlong
}

TEST_CASE("the domain name template puts the uuid in once and refuses templates that would collide") {
  const std::string uuid = "0b9b4c4e-6f36-4d51-9f0c-5b8f0e1d2a3b";
  using kiln::virt::domain_name_from_template;
  REQUIRE(domain_name_from_template(kiln::virt::kDefaultInstanceNameTemplate, uuid) == "instance-" + uuid);
  REQUIRE(domain_name_from_template("vm-%s", uuid) == "vm-" + uuid);
  REQUIRE(domain_name_from_template("100%%-%(uuid)s", uuid) == "100%-" + uuid);
  REQUIRE_KILN_ERROR(domain_name_from_template("web", uuid), ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(domain_name_from_template("%s-%s", uuid), ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(domain_name_from_template("instance-%08x", uuid), ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(domain_name_from_template("a/%s", uuid), ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(domain_name_from_template(std::string(250, 'x') + "%s", uuid), ErrorCode::kInvalidArgument);
}
