// The operations journal and retention, in-process (test:///default, Glance
// unreachable, no peers): the file an operator reads, what survives a torn or
// garbled line, a service restarted on the same instances path, and the
// retention bound that never forgets a just-finished operation.
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "kiln/config/settings.h"
#include "kiln/rpc/operation_journal.h"
#include "kiln/rpc/service.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;
using kiln::rpc::OperationJournal;

namespace {

json record(const std::string& id, std::uint64_t seq, const std::string& state) {
  return {{"id", id},           {"seq", seq},          {"kind", "delete"}, {"state", state},
          {"step", "x"},        {"bytes_done", 0},     {"bytes_total", nullptr},
          {"created_at", "2026-11-30T10:00:00Z"}};
}

std::vector<std::string> lines_of(const fs::path& path) {
  std::ifstream file(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

kiln::config::Settings test_settings(const kiln::test::ScratchDir& scratch) {
  kiln::config::Settings settings;
  settings.instances_path = scratch / "instances";
  settings.libvirt_uri = "test:///default";
  settings.glance_api_servers = {kiln::http::parse_url("http://127.0.0.1:1")};
  settings.rpc.max_concurrent_builds = 2;
  settings.cache.download_retries = 0;  // fail at once, not after the backoff
  return settings;
}

kiln::rpc::Response call(kiln::rpc::Service& service, const std::string& method, const std::string& target,
                         const std::string& body = "") {
  return service.handle({method, target, body, {}});
}

json wait_finished(kiln::rpc::Service& service, const std::string& id) {
  for (int i = 0; i < 3000; ++i) {
    auto operation = call(service, "GET", "/v1/operations/" + id).body;
    if (operation["state"] == "succeeded" || operation["state"] == "failed") return operation;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("operation " << id << " did not finish");
  return {};
}

// A delete of an instance that does not exist: an operation that succeeds
// at once on test:///default.
std::string finished_delete(kiln::rpc::Service& service) {
  auto accepted = call(service, "DELETE", "/v1/instances/" + kiln::test::random_uuid());
  REQUIRE(accepted.status == 202);
  std::string id = accepted.body["operation_id"];
  REQUIRE(wait_finished(service, id)["state"] == "succeeded");
  return id;
}

json boot_body(const std::string& uuid, unsigned vcpus = 1) {
  return {{"uuid", uuid},
          {"image_id", "0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff"},
          {"flavor", {{"vcpus", vcpus}, {"memory_mb", 64}, {"root_gb", 1}}},
          {"metadata", {{"owner", "team-a"}}}};
}

}  // namespace

TEST_CASE("the journal is JSON Lines whose last line per id is its state, and compaction keeps only that") {
  kiln::test::ScratchDir scratch;
  fs::path path = scratch / "operations.log";
  {
    OperationJournal journal(path);
    journal.append(record("op-a", 1, "queued"));
    journal.append(record("op-b", 2, "queued"));
    journal.append(record("op-a", 1, "succeeded"));
    journal.append(record("op-c", 3, "queued"));
    journal.forget("op-b");
    // An operator reads it line by line; every line is a JSON object.
    auto lines = lines_of(path);
    REQUIRE(lines.size() == 4);
    for (const auto& line : lines) REQUIRE(json::parse(line).is_object());
    REQUIRE(json::parse(lines[2])["state"] == "succeeded");
    journal.compact();
    REQUIRE(journal.lines() == 2);
  }
  auto lines = lines_of(path);
  REQUIRE(lines.size() == 2);
  REQUIRE(json::parse(lines[0])["id"] == "op-a");
  REQUIRE(json::parse(lines[0])["state"] == "succeeded");
  REQUIRE(json::parse(lines[1])["id"] == "op-c");
  REQUIRE(!fs::exists(path.string() + ".tmp"));

  OperationJournal reopened(path);
  auto contents = reopened.take_contents();
  REQUIRE(contents.records.size() == 2);
  REQUIRE(contents.records[0]["state"] == "succeeded");
  REQUIRE(contents.skipped_lines == 0);
  REQUIRE(!contents.torn_tail);
}

TEST_CASE("a torn last line, garbled lines and binary junk are skipped, and the next append starts a fresh line") {
  kiln::test::ScratchDir scratch;
  fs::path path = scratch / "operations.log";
  std::string good = record("op-good", 7, "succeeded").dump() + "\n";
  const char junk_bytes[] = "\x00\x01\xff\xfe garbage {";
  std::string junk(junk_bytes, sizeof junk_bytes - 1);  // the NUL inside included, the terminator not
  kiln::test::write_text(path, good + "{\"id\": \"op-half\", \"seq\": 8, \"ki\n" + junk + "\n" +
                                   "{\"not\": \"an operation\"}\n" + "[1, 2, 3]\n" +
                                   record("op-torn", 9, "queued").dump().substr(0, 40));
  OperationJournal journal(path);
  auto contents = journal.take_contents();
  REQUIRE(contents.records.size() == 1);
  REQUIRE(contents.records[0]["id"] == "op-good");
  REQUIRE(contents.skipped_lines == 4);
  REQUIRE(contents.torn_tail);
  // The torn fragment is cut off: the next record is a line of its own.
  journal.append(record("op-next", 10, "queued"));
  OperationJournal again(path);
  auto after = again.take_contents();
  REQUIRE(after.records.size() == 2);
  REQUIRE(after.records[1]["id"] == "op-next");
  REQUIRE(!after.torn_tail);
}

// A directory on tmpfs when the host has one: this test counts lines, and
// 2,000 fdatasyncs on a disk would take seconds for nothing.
struct MemoryDir {
  fs::path path;
  MemoryDir() {
    std::string pattern = fs::is_directory("/dev/shm") ? "/dev/shm/kiln-test.XXXXXX" : "/tmp/kiln-test.XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~MemoryDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

TEST_CASE("the journal file stays within twice the live operations plus the compaction slack") {
  MemoryDir scratch;
  fs::path path = scratch.path / "operations.log";
  OperationJournal journal(path);
  const std::size_t live = 3;
  std::size_t most = 0;
  // Two lines per operation: enough for two compactions.
  const std::uint64_t operations = kiln::rpc::kCompactionSlack + 64;
  for (std::uint64_t seq = 1; seq <= operations; ++seq) {
    std::string id = "op-" + std::to_string(seq);
    journal.append(record(id, seq, "queued"));
    journal.append(record(id, seq, "succeeded"));
    if (seq > live) journal.forget("op-" + std::to_string(seq - live));
    most = std::max(most, journal.lines());
  }
  INFO("most lines seen " << most);
  // live + 1 while a new id is appended before the oldest is forgotten
  REQUIRE(most <= 2 * (live + 1) + kiln::rpc::kCompactionSlack + 1);
  REQUIRE(journal.compactions() >= 2);
  journal.compact();
  auto lines = lines_of(path);
  REQUIRE(lines.size() == live);
  REQUIRE(json::parse(lines.back())["id"] == "op-" + std::to_string(operations));
}

TEST_CASE("a service restarted on the same instances path answers its operations as before") {
  kiln::test::ScratchDir scratch;
  auto settings = test_settings(scratch);
  std::string deleted, failed, boot;
  json deleted_before, failed_before;
  {
    kiln::rpc::Service service(settings);
    deleted = finished_delete(service);
    deleted_before = call(service, "GET", "/v1/operations/" + deleted).body;
    // Glance is unreachable: a pre-cache fails with the client's code.
    auto precache = call(service, "POST", "/v1/images/0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff/cache");
    failed = precache.body["operation_id"];
    failed_before = wait_finished(service, failed);
    REQUIRE(failed_before["error"]["code"] == "http_error");
    boot = call(service, "POST", "/v1/instances", boot_body(kiln::test::random_uuid()).dump()).body["operation_id"];
    REQUIRE(wait_finished(service, boot)["state"] == "failed");
    REQUIRE(service.drain(std::chrono::seconds(30)));
  }
  kiln::rpc::Service restarted(settings);
  REQUIRE(call(restarted, "GET", "/v1/operations/" + deleted).body == deleted_before);
  REQUIRE(call(restarted, "GET", "/v1/operations/" + failed).body == failed_before);
  auto boot_after = call(restarted, "GET", "/v1/operations/" + boot).body;
  REQUIRE(boot_after["metadata"]["owner"] == "team-a");
  // Nothing of the body but its digest is in the journal.
  std::string text = kiln::read_file(settings.instances_path / kiln::rpc::kOperationJournalName);
  REQUIRE(text.find("0c1d2e3f-aaaa-bbbb-cccc-ddddeeeeffff") != std::string::npos);  // the image id, shown by GET
  REQUIRE(text.find("memory_mb") == std::string::npos);
  REQUIRE(text.find("request_sha256") != std::string::npos);
  REQUIRE(call(restarted, "GET", "/v1/operations/op-00000000000000000000000000000000").status == 404);
}

TEST_CASE("an operation the journal holds as unfinished reads as interrupted after a restart") {
  kiln::test::ScratchDir scratch;
  auto settings = test_settings(scratch);
  std::string uuid = kiln::test::random_uuid();
  std::string id;
  {
    kiln::rpc::Service service(settings);
    id = finished_delete(service);
  }
  // What a kill during the operation leaves: its accepted line and no end.
  fs::path journal = settings.instances_path / kiln::rpc::kOperationJournalName;
  auto running = record("op-0123456789abcdef0123456789abcdef", 99, "running");
  running["kind"] = "boot";
  running["uuid"] = uuid;
  running["step"] = "fetching the image";
  running["started_at"] = "2026-11-30T10:00:01Z";
  // The digest of the body the test sends again below (sorted keys, as the service keeps it).
  running["request_sha256"] = kiln::hex_digest_of("sha256", boot_body(uuid).dump());
  {
    std::ofstream out(journal, std::ios::app);
    out << running.dump() << "\n";
  }
  kiln::rpc::Service restarted(settings);
  auto operation = call(restarted, "GET", "/v1/operations/op-0123456789abcdef0123456789abcdef").body;
  INFO(operation.dump());
  REQUIRE(operation["state"] == "failed");
  REQUIRE(operation["error"]["code"] == "interrupted");
  REQUIRE(operation["error"]["message"].get<std::string>().find("step 'fetching the image'") != std::string::npos);
  REQUIRE(operation.contains("finished_at"));
  REQUIRE(call(restarted, "GET", "/v1/operations/" + id).body["state"] == "succeeded");
  // Another body for that uuid is still a conflict; the same body is run anew.
  REQUIRE(call(restarted, "POST", "/v1/instances", boot_body(uuid, 2).dump()).status == 409);
  auto again = call(restarted, "POST", "/v1/instances", boot_body(uuid).dump());
  REQUIRE(again.status == 202);
  REQUIRE(again.body["operation_id"] != "op-0123456789abcdef0123456789abcdef");
  wait_finished(restarted, again.body["operation_id"]);
  // The interruption is itself on disk: a second restart reads the same.
  kiln::rpc::Service third(settings);
  REQUIRE(call(third, "GET", "/v1/operations/op-0123456789abcdef0123456789abcdef").body == operation);
}

TEST_CASE("retention never forgets a just-finished operation: the bound refuses new work until one is old enough") {
  kiln::test::ScratchDir scratch;
  auto settings = test_settings(scratch);
  settings.rpc.max_retained_operations = 3;
  settings.rpc.operation_retention = std::chrono::seconds(3600);
  kiln::rpc::Service service(settings);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(finished_delete(service));
  auto refused = call(service, "DELETE", "/v1/instances/" + kiln::test::random_uuid());
  INFO(refused.body.dump());
  REQUIRE(refused.status == 503);
  REQUIRE(refused.body["error"]["code"] == "overloaded");
  REQUIRE(refused.body["error"]["message"].get<std::string>().find("operation_retention_seconds") != std::string::npos);
  // Every DELETE that was answered 202 still answers.
  for (const auto& id : ids) REQUIRE(call(service, "GET", "/v1/operations/" + id).status == 200);

  // With a retention of 0 s the count bound makes room, oldest first.
  settings.rpc.operation_retention = std::chrono::seconds(0);
  service.reload(settings);
  std::string fourth = finished_delete(service);
  REQUIRE(call(service, "GET", "/v1/operations/" + ids[0]).status == 404);
  REQUIRE(call(service, "GET", "/v1/operations/" + ids[1]).status == 200);
  REQUIRE(call(service, "GET", "/v1/operations/" + ids[2]).status == 200);
  REQUIRE(call(service, "GET", "/v1/operations/" + fourth).status == 200);
  auto metrics = *call(service, "GET", "/metrics").text_body;
  REQUIRE(metrics.find("kiln_operations_retained 3\n") != std::string::npos);
  REQUIRE(metrics.find("kiln_operations_forgotten_total 1\n") != std::string::npos);
}

TEST_CASE("a forgotten boot takes its idempotency entry with it, and a lowered bound applies at the next start") {
  kiln::test::ScratchDir scratch;
  auto settings = test_settings(scratch);
  settings.rpc.max_retained_operations = 2;
  settings.rpc.operation_retention = std::chrono::seconds(0);
  std::string uuid = kiln::test::random_uuid();
  std::vector<std::string> ids;
  {
    kiln::rpc::Service service(settings);
    auto first = call(service, "POST", "/v1/instances", boot_body(uuid).dump());
    REQUIRE(first.status == 202);
    REQUIRE(wait_finished(service, first.body["operation_id"])["state"] == "failed");
    // Retained: another body for the uuid is a conflict.
    REQUIRE(call(service, "POST", "/v1/instances", boot_body(uuid, 2).dump()).status == 409);
    ids.push_back(finished_delete(service));
    ids.push_back(finished_delete(service));  // the boot is forgotten to make room
    REQUIRE(call(service, "GET", "/v1/operations/" + first.body["operation_id"].get<std::string>()).status == 404);
    // Forgotten with its operation: the other body is now a new boot.
    auto other = call(service, "POST", "/v1/instances", boot_body(uuid, 2).dump());
    INFO(other.body.dump());
    REQUIRE(other.status == 202);
    ids.push_back(other.body["operation_id"]);
    wait_finished(service, ids.back());
  }
  settings.rpc.max_retained_operations = 1;
  kiln::rpc::Service restarted(settings);
  REQUIRE(call(restarted, "GET", "/v1/operations/" + ids[1]).status == 404);
  REQUIRE(call(restarted, "GET", "/v1/operations/" + ids[2]).status == 200);
  REQUIRE(kiln::rpc::OperationJournal(settings.instances_path / kiln::rpc::kOperationJournalName)
              .take_contents()
              .records.size() == 1);
}
