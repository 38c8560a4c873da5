#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "kiln/glance/client.h"
#include "kiln/glance/image_record.h"
#include "kiln/glance/keystone.h"
#include "kiln/image/converter.h"

using kiln::ErrorCode;

TEST_CASE("an image record keeps standard fields, nulls and custom properties") {
  auto record = kiln::glance::parse_image_record(R"({
    "id": "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11", "name": "cirros", "status": "active",
    "disk_format": "qcow2", "container_format": "bare", "size": 21430272, "virtual_size": null,
    "checksum": "443b7623e27ecf03dc9e01ee93f67afe", "os_hash_algo": "sha512", "os_hash_value": "abc",
    "visibility": "public", "protected": false, "min_disk": 0, "tags": [],
    "hw_disk_bus": "scsi", "img_signature_hash_method": "SHA-256"})");
  REQUIRE(record.id == "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11");
  REQUIRE(record.status == "active");
  REQUIRE(record.size == 21430272u);
  REQUIRE_FALSE(record.virtual_size.has_value());
  REQUIRE(record.os_hash_algo == "sha512");
  REQUIRE(record.properties.size() == 2);
  REQUIRE(record.properties.at("hw_disk_bus") == "scsi");
}

TEST_CASE("an image record written as JSON reads back the same, in Glance's flat form") {
  auto record = kiln::glance::parse_image_record(R"({
    "id": "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11", "name": "cirros", "status": "active",
    "disk_format": "qcow2", "container_format": "bare", "size": 21430272, "virtual_size": null,
    "min_disk": 2, "checksum": null, "os_hash_algo": "sha512", "os_hash_value": "abc",
    "hw_disk_bus": "scsi", "os_type": "linux"})");
  nlohmann::json written = record;
  REQUIRE(written["hw_disk_bus"] == "scsi");  // properties at the top level, as Glance has them
  REQUIRE(written["virtual_size"].is_null());
  REQUIRE(written["checksum"].is_null());
  auto again = kiln::glance::parse_image_record(written.dump());
  REQUIRE(again.id == record.id);
  REQUIRE(again.name == "cirros");
  REQUIRE(again.size == record.size);
  REQUIRE_FALSE(again.virtual_size.has_value());
  REQUIRE(again.min_disk == 2);
  REQUIRE(again.os_hash_value == "abc");
  REQUIRE(again.properties == record.properties);
  REQUIRE_KILN_ERROR(nlohmann::json::array().get<kiln::glance::ImageRecord>(), ErrorCode::kGlanceError);
}

TEST_CASE("an image record keeps direct_url and the locations' urls, in order and without repeats") {
  auto record = kiln::glance::parse_image_record(R"({
    "id": "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11", "status": "active",
    "direct_url": "rbd://0f9d8a36-7f40-4c4e-9d0b-6f1a2b3c4d5e/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11/snap",
    "locations": [
      {"url": "rbd://0f9d8a36-7f40-4c4e-9d0b-6f1a2b3c4d5e/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11/snap",
       "metadata": {"store": "ceph"}},
      {"url": "file:///var/lib/glance/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11", "metadata": {}},
      {"metadata": {}}, {"url": 7}, "x"
    ]})");
  REQUIRE(record.locations ==
          std::vector<std::string>{
              "rbd://0f9d8a36-7f40-4c4e-9d0b-6f1a2b3c4d5e/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11/snap",
              "file:///var/lib/glance/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11"});
  REQUIRE_FALSE(record.properties.contains("direct_url"));
  // Not written back: an offered record carries no location kiln would clone.
  nlohmann::json written = record;
  REQUIRE_FALSE(written.contains("direct_url"));
  REQUIRE(kiln::glance::parse_image_record(written.dump()).locations.empty());
}

TEST_CASE("a reply that is not an image record is a glance_error") {
  REQUIRE_KILN_ERROR(kiln::glance::parse_image_record("<html>"), ErrorCode::kGlanceError);
  REQUIRE_KILN_ERROR(kiln::glance::parse_image_record("{\"images\": []}"), ErrorCode::kGlanceError);
}

TEST_CASE("image ids that are not UUIDs never reach a URL") {
  kiln::glance::GlanceClient glance({kiln::http::parse_url("http://127.0.0.1:1")});
  REQUIRE_KILN_ERROR(glance.get_image("../../v2/images"), ErrorCode::kInvalidArgument);
}

TEST_CASE("Glance disk formats map to qemu drivers, unconvertible ones do not") {
  REQUIRE(kiln::image::qemu_format_for("vhd") == "vpc");
  REQUIRE(kiln::image::qemu_format_for("qcow2") == "qcow2");
  REQUIRE(kiln::image::qemu_format_for("iso") == "raw");
  REQUIRE_FALSE(kiln::image::qemu_format_for("ploop").has_value());
  REQUIRE_FALSE(kiln::image::qemu_format_for("").has_value());
}

namespace {

kiln::glance::KeystoneCredentials keystone_password() {
  kiln::glance::KeystoneCredentials credentials;
  credentials.auth_url = kiln::http::parse_url("http://127.0.0.1:1/v3");
  credentials.username = "kiln";
  credentials.password = "s3cret-password";
  credentials.project_name = "service";
  return credentials;
}

kiln::glance::KeystoneCredentials keystone_application_credential() {
  kiln::glance::KeystoneCredentials credentials;
  credentials.auth_url = kiln::http::parse_url("http://127.0.0.1:1");
  credentials.auth_type = "v3applicationcredential";
  credentials.application_credential_id = "0c8b7e3e2b5c4a3f9d1e6f7a8b9c0d1e";
  credentials.application_credential_secret = "s3cret-secret";
  return credentials;
}

}  // namespace

TEST_CASE("complete Keystone credentials of either kind are accepted without talking to Keystone") {
  kiln::glance::KeystoneTokenSource password(keystone_password());
  kiln::glance::KeystoneTokenSource application(keystone_application_credential());
  auto v3password = keystone_password();
  v3password.auth_type = "v3password";
  kiln::glance::KeystoneTokenSource alias(v3password);
}

TEST_CASE("a Keystone password login needs a username, a password, domains and a project") {
  using kiln::glance::KeystoneTokenSource;
  auto without = [](std::string kiln::glance::KeystoneCredentials::*field) {
    auto credentials = keystone_password();
    credentials.*field = "";
    return credentials;
  };
  using C = kiln::glance::KeystoneCredentials;
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{without(&C::username)}, ErrorCode::kInvalidArgument, "username");
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{without(&C::password)}, ErrorCode::kInvalidArgument, "password");
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{without(&C::project_name)}, ErrorCode::kInvalidArgument,
                              "project_name");
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{without(&C::user_domain_name)}, ErrorCode::kInvalidArgument,
                              "user_domain_name");
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{without(&C::project_domain_name)}, ErrorCode::kInvalidArgument,
                              "project_domain_name");
}

TEST_CASE("a Keystone application credential needs its id and its secret") {
  using kiln::glance::KeystoneTokenSource;
  auto credentials = keystone_application_credential();
  credentials.application_credential_id = "";
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{credentials}, ErrorCode::kInvalidArgument,
                              "application_credential_id");
  credentials = keystone_application_credential();
  credentials.application_credential_secret = "";
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{credentials}, ErrorCode::kInvalidArgument,
                              "application_credential_secret");
}

TEST_CASE("an unknown Keystone auth_type or interface, no auth_url or a negative margin is refused") {
  using kiln::glance::KeystoneTokenSource;
  auto credentials = keystone_password();
  credentials.auth_type = "token";
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{credentials}, ErrorCode::kInvalidArgument, "'token'");
  credentials = keystone_password();
  credentials.interface = "publicURL";
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{credentials}, ErrorCode::kInvalidArgument, "publicURL");
  credentials = keystone_password();
  credentials.auth_url = {};
  REQUIRE_KILN_ERROR_MENTIONS(KeystoneTokenSource{credentials}, ErrorCode::kInvalidArgument, "auth_url");
  auto negative_margin = [] { return KeystoneTokenSource(keystone_password(), std::chrono::seconds(-1)); };
  REQUIRE_KILN_ERROR_MENTIONS(negative_margin(), ErrorCode::kInvalidArgument, "margin");
}

TEST_CASE("an unreachable Keystone is an http_error naming it and never the password") {
  kiln::glance::KeystoneTokenSource tokens(keystone_password());
  try {
    tokens.token();
    FAIL("no kiln::Error was thrown");
  } catch (const kiln::Error& error) {
    std::string message = error.what();
    INFO(message);
    REQUIRE(error.code() == ErrorCode::kHttpError);
    REQUIRE(message.find("Keystone at http://127.0.0.1:1/v3") != std::string::npos);
    REQUIRE(message.find("user 'kiln'") != std::string::npos);
    REQUIRE(message.find("s3cret") == std::string::npos);
  }
  REQUIRE_KILN_ERROR(tokens.image_endpoints(), ErrorCode::kHttpError);
}
