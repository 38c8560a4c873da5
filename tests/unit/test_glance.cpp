#include <catch2/catch.hpp>

#include "assertions.h"
#include "kiln/glance/client.h"
#include "kiln/glance/image_record.h"
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

TEST_CASE("a reply that is not an image record is a glance_error") {
  REQUIRE_KILN_ERROR(kiln::glance::parse_image_record("<html>"), ErrorCode::kGlanceError);
  REQUIRE_KILN_ERROR(kiln::glance::parse_image_record("{\"images\": []}"), ErrorCode::kGlanceError);
}

TEST_CASE("image ids that are not UUIDs never reach a URL") {
  kiln::glance::GlanceClient glance({kiln::http::parse_url("http://127.0.0.1:1")});
  REQUIRE_KILN_ERROR(glance.get_image("../../v2/images"), ErrorCode::kInvalidArgument);
}

TEST_CASE("Glance disk formats map to qemu drivers; unconvertible ones do not") {
  REQUIRE(kiln::image::qemu_format_for("vhd") == "vpc");
  REQUIRE(kiln::image::qemu_format_for("qcow2") == "qcow2");
  REQUIRE(kiln::image::qemu_format_for("iso") == "raw");
  REQUIRE_FALSE(kiln::image::qemu_format_for("ploop").has_value());
  REQUIRE_FALSE(kiln::image::qemu_format_for("").has_value());
}
