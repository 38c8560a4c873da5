// lib/rpc without a transport: bodies refused by their schema name the field
// at fault, errors keep their stable codes, routes answer as documented.
#include <catch2/catch.hpp>
#include <thread>

#include "kiln/config/settings.h"
#include "kiln/rpc/message.h"
#include "kiln/rpc/schema_validation.h"
#include "kiln/rpc/service.h"
#include "scratch.h"

using nlohmann::json;
using kiln::rpc::json_pointer_from_context;

namespace {

const std::string kUuid = "3f2a0b1c-1111-2222-3333-444455556666";
const std::string kImage = "0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff";

json good_boot() {
  return {{"uuid", kUuid}, {"image_id", kImage}, {"name", "web-1"},
          {"flavor", {{"vcpus", 2}, {"memory_mb", 512}, {"root_gb", 1}, {"swap_mb", 16}, {"ephemeral_gb", 0}}},
          {"nics", json::array({{{"type", "bridge"}, {"bridge", "br0"}, {"mac", "52:54:00:12:34:56"}, {"model", "virtio"}}})},
          {"metadata", {{"owner", "team-a"}}}};
}

kiln::config::Settings test_settings(const kiln::test::ScratchDir& scratch) {
  kiln::config::Settings settings;
  settings.instances_path = scratch / "instances";
  settings.libvirt_uri = "test:///default";
  // Nothing listens on port 1: an operation that reaches Glance fails fast.
  settings.glance_api_servers = {kiln::http::parse_url("http://127.0.0.1:1")};
  settings.rpc.max_concurrent_builds = 2;
  return settings;
}

kiln::rpc::Response post(kiln::rpc::Service& service, const std::string& target, const std::string& body) {
  return service.handle({"POST", target, body, {}});
}

// Polls GET /v1/operations/{id} until it has finished (drain() would refuse
// an operation that had not started yet).
json wait_finished(kiln::rpc::Service& service, const std::string& id) {
  for (int i = 0; i < 3000; ++i) {
    auto operation = service.handle({"GET", "/v1/operations/" + id, "", {}}).body;
    if (operation["state"] == "succeeded" || operation["state"] == "failed") return operation;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("operation " << id << " did not finish");
  return {};
}

}  // namespace

TEST_CASE("valijson contexts become RFC 6901 pointers with ~0 and ~1 escapes") {
  REQUIRE(json_pointer_from_context({"<root>"}) == "");
  REQUIRE(json_pointer_from_context({"<root>", "[flavor]", "[vcpus]"}) == "/flavor/vcpus");
  REQUIRE(json_pointer_from_context({"<root>", "[nics]", "[0]", "[mac]"}) == "/nics/0/mac");
  REQUIRE(json_pointer_from_context({"<root>", "[metadata]", "[a/b]"}) == "/metadata/a~1b");
  REQUIRE(json_pointer_from_context({"<root>", "[metadata]", "[m~n]"}) == "/metadata/m~0n");
  REQUIRE(json_pointer_from_context({"<root>", "[metadata]", "[~/]"}) == "/metadata/~0~1");
}

TEST_CASE("every request schema is embedded in the library") {
  auto names = kiln::rpc::schema_names();
  for (const char* name : {"boot-request", "prune-request", "precache-request"}) {
    REQUIRE(std::find(names.begin(), names.end(), name) != names.end());
  }
  REQUIRE(std::find(names.begin(), names.end(), "config") == names.end());
}

TEST_CASE("a well-formed boot body passes its schema unchanged") {
  auto body = good_boot();
  REQUIRE(kiln::rpc::validate_body("boot-request", body.dump()) == body);
}

TEST_CASE("bad boot bodies are refused with 400 and the pointer of the offending field") {
  struct Case {
    const char* what;
    std::function<void(json&)> spoil;
    const char* pointer;
  };
  std::vector<Case> cases = {
      {"an unknown top-level field", [](json& b) { b["colour"] = "red"; }, "/colour"},
      {"an unknown flavor field", [](json& b) { b["flavor"]["gpus"] = 1; }, "/flavor/gpus"},
      {"an unknown NIC field", [](json& b) { b["nics"][0]["vlan"] = 7; }, "/nics/0/vlan"},
      {"vcpus as a string", [](json& b) { b["flavor"]["vcpus"] = "2"; }, "/flavor/vcpus"},
      {"vcpus as a fraction", [](json& b) { b["flavor"]["vcpus"] = 1.5; }, "/flavor/vcpus"},
      {"a uuid that is not one", [](json& b) { b["uuid"] = "not-a-uuid"; }, "/uuid"},
      {"a uuid with a path in it", [](json& b) { b["uuid"] = "../../etc/passwd"; }, "/uuid"},
      {"an image id that is not a uuid", [](json& b) { b["image_id"] = "cirros"; }, "/image_id"},
      {"100000 vcpus", [](json& b) { b["flavor"]["vcpus"] = 100000; }, "/flavor/vcpus"},
      {"0 vcpus", [](json& b) { b["flavor"]["vcpus"] = 0; }, "/flavor/vcpus"},
      {"an exabyte of memory", [](json& b) { b["flavor"]["memory_mb"] = 1099511627776LL; }, "/flavor/memory_mb"},
      {"a negative root disk", [](json& b) { b["flavor"]["root_gb"] = -1; }, "/flavor/root_gb"},
      {"a 10 PiB root disk", [](json& b) { b["flavor"]["root_gb"] = 10485760; }, "/flavor/root_gb"},
      {"a bad MAC address", [](json& b) { b["nics"][0]["mac"] = "52:54:00:zz:34:56"; }, "/nics/0/mac"},
      {"an unknown NIC type", [](json& b) { b["nics"][0]["type"] = "vhostuser"; }, "/nics/0/type"},
      {"a missing flavor", [](json& b) { b.erase("flavor"); }, "/flavor"},
      {"a missing memory size", [](json& b) { b["flavor"].erase("memory_mb"); }, "/flavor/memory_mb"},
      {"a metadata value that is not a string", [](json& b) { b["metadata"]["a/b"] = 5; }, "/metadata/a~1b"},
      // The name is a display name (spaces and any UTF-8 are fine), but not a control character.
      {"a name with a newline", [](json& b) { b["name"] = "my\nvm"; }, "/name"},
      {"an array as the body", [](json& b) { b = json::array(); }, ""},
  };
  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  for (const auto& c : cases) {
    INFO(c.what);
    json body = good_boot();
    c.spoil(body);
    auto response = post(service, "/v1/instances", body.dump());
    INFO(response.body.dump());
    REQUIRE(response.status == 400);
    REQUIRE(response.body["error"]["code"] == "invalid_argument");
    REQUIRE(response.body["error"]["pointer"] == c.pointer);
  }
  REQUIRE(!std::filesystem::exists(scratch / "instances" / kUuid));
}

TEST_CASE("a body that is not JSON is refused with 400 before anything runs") {
  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  auto response = post(service, "/v1/instances", "{\"uuid\": ");
  REQUIRE(response.status == 400);
  REQUIRE(response.body["error"]["code"] == "invalid_argument");
  REQUIRE(response.body["error"]["message"].get<std::string>().find("not JSON") != std::string::npos);
  REQUIRE(response.body["error"]["pointer"] == "");
  REQUIRE(post(service, "/v1/cache/prune", "{\"dry_run\": \"yes\"}").body["error"]["pointer"] == "/dry_run");
  REQUIRE(post(service, "/v1/images/" + kImage + "/cache", "{\"force\": true}").body["error"]["pointer"] == "/force");
}

TEST_CASE("routes answer 404, 405 and 400 as documented, with the error body") {
  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  auto get = [&](const std::string& target) { return service.handle({"GET", target, "", {}}); };
  REQUIRE(get("/nowhere").status == 404);
  REQUIRE(get("/v1/operations/op-unknown").status == 404);
  REQUIRE(get("/v1/operations/op-unknown").body["error"]["code"] == "not_found");
  REQUIRE(service.handle({"PUT", "/v1/instances", "", {}}).status == 405);
  REQUIRE(service.handle({"DELETE", "/v1/instances/not-a-uuid", "", {}}).body["error"]["code"] == "invalid_uuid");
  REQUIRE(service.handle({"GET", "/v1/instances", "{\"x\":1}", {}}).status == 400);
  REQUIRE(get("/v1/instances/" + kUuid).status == 404);
  auto health = get("/healthz");
  REQUIRE(health.status == 200);
  REQUIRE(health.body["status"] == "ok");
  REQUIRE(get("/v1/instances").body["instances"].empty());
  REQUIRE(get("/v1/cache").body["bases"].empty());
}

TEST_CASE("a second boot of a uuid with a different body is a conflict") {
  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  auto first = post(service, "/v1/instances", good_boot().dump());
  REQUIRE(first.status == 202);
  REQUIRE(first.headers["Location"] == "/v1/operations/" + first.body["operation_id"].get<std::string>());
  json other = good_boot();
  other["flavor"]["vcpus"] = 4;
  auto second = post(service, "/v1/instances", other.dump());
  REQUIRE(second.status == 409);
  REQUIRE(second.body["error"]["code"] == "conflict");
  // Glance is unreachable here: the operation fails with the client's code, visibly.
  auto operation = wait_finished(service, first.body["operation_id"]);
  REQUIRE(operation["state"] == "failed");
  REQUIRE(operation["error"]["code"] == "http_error");
  REQUIRE(operation["metadata"]["owner"] == "team-a");
  REQUIRE(service.drain(std::chrono::seconds(30)));
  // Drained: new work is refused, and health says so.
  REQUIRE(post(service, "/v1/images/" + kImage + "/cache", "").status == 503);
  REQUIRE(service.handle({"GET", "/healthz", "", {}}).body["error"]["code"] == "shutting_down");
}

TEST_CASE("metrics are in the Prometheus text format with kiln_ names") {
  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  post(service, "/v1/instances", "[]");
  wait_finished(service, post(service, "/v1/instances", good_boot().dump()).body["operation_id"]);
  auto response = service.handle({"GET", "/metrics", "", {}});
  REQUIRE(response.status == 200);
  REQUIRE(response.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
  const std::string& text = *response.text_body;
  for (const char* line : {"# TYPE kiln_boots_total counter", "kiln_boots_total 0", "kiln_cache_entries 0",
                           "kiln_http_requests_total{status=\"400\"} 1", "kiln_http_requests_total{status=\"202\"} 1",
                           "kiln_operation_failures_total{code=\"http_error\"} 1",
                           "# TYPE kiln_operation_duration_seconds histogram",
                           "kiln_operation_duration_seconds_bucket{kind=\"boot\",le=\"+Inf\"} 1",
                           "kiln_operation_duration_seconds_count{kind=\"boot\"} 1", "kiln_operations_running 0",
                           "kiln_downloaded_bytes_total 0"}) {
    INFO(line);
    REQUIRE(text.find(std::string(line) + "\n") != std::string::npos);
  }
}

TEST_CASE("kiln errors map to HTTP statuses by who is at fault") {
  using kiln::ErrorCode;
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kNotFound) == 404);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kConflict) == 409);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kInstanceExists) == 409);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kOverloaded) == 503);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kShuttingDown) == 503);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kInvalidUuid) == 400);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kLibvirtError) == 502);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kInternalError) == 500);
  // A local disk fault is the host's, not an upstream's: never 502.
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kInsufficientSpace) == 507);
  REQUIRE(kiln::rpc::http_status_for(ErrorCode::kIoError) == 500);
}

TEST_CASE("error bodies quote bytes that are not UTF-8 escaped, and stay valid JSON") {
  using kiln::rpc::escape_invalid_utf8;
  REQUIRE(escape_invalid_utf8("caf\xc3\xa9 \xf0\x9f\x94\xa5") == "caf\xc3\xa9 \xf0\x9f\x94\xa5");
  REQUIRE(escape_invalid_utf8("a\xff" "b") == "a\\xffb");
  REQUIRE(escape_invalid_utf8("\xc3\x28") == "\\xc3(");           // a lead byte without its continuation
  REQUIRE(escape_invalid_utf8("\xc0\xaf") == "\\xc0\\xaf");      // overlong '/'
  REQUIRE(escape_invalid_utf8("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a UTF-16 surrogate
  REQUIRE(escape_invalid_utf8("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  REQUIRE(escape_invalid_utf8("tail \xe2\x82") == "tail \\xe2\\x82");  // cut short
  auto response = kiln::rpc::error_response(kiln::ErrorCode::kNotFound, "no such resource: /v1/\xff");
  REQUIRE_NOTHROW(response.body.dump());
  REQUIRE(response.body["error"]["message"] == "no such resource: /v1/\\xff");

  kiln::test::ScratchDir scratch;
  kiln::rpc::Service service(test_settings(scratch));
  auto path = service.handle({"GET", "/v1/instances/\xfe", "", {}});
  REQUIRE(path.status == 400);
  REQUIRE(path.body["error"]["message"] == "the request path is not UTF-8: /v1/instances/\\xfe");
  auto body = post(service, "/v1/instances", "{\"uuid\": \"\xff\"}");
  REQUIRE(body.status == 400);
  REQUIRE_NOTHROW(body.body.dump());
}
