// kilnd on RabbitMQ, against a real broker (tools/peers/rabbitmq: the `bus`
// fixture's, or a test's own where it is stopped) and the real Glance of the
// `peers` fixture; libvirt is test:///default. What the bus promises
// (kiln/bus/agent_bus.h): requests answered on reply_to with their
// correlation id, events and state reports, the fanout, redelivery answered
// with the same operation, poison messages dead-lettered with a reason, a
// broker down at start or restarted mid-operation survived.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <thread>

#include "bus_support.h"
#include "kiln/bus/fleet_client.h"
#include "kiln/bus/topology.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "peers.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using kiln::test::BusHost;

namespace {

json boot_body(const std::string& uuid, const std::string& image_id) {
  return {{"uuid", uuid}, {"image_id", image_id}, {"start", false},
          {"flavor", {{"vcpus", 1}, {"memory_mb", 64}, {"root_gb", 1}, {"swap_mb", 0}}}};
}

std::string small_image(const kiln::test::ScratchDir& scratch, const std::string& name) {
  kiln::test::make_qcow2(scratch / (name + ".qcow2"), "16M");
  return kiln::test::upload_image(name, "qcow2", scratch / (name + ".qcow2"));
}

kiln::CommandResult fleet(const BusHost& host, std::vector<std::string> args) {
  std::vector<std::string> argv = {KILN_KILNCTL, "--json", "--config", host.config.string(), "fleet"};
  argv.insert(argv.end(), args.begin(), args.end());
  return kiln::run(kiln::Command(argv, {}, 240s));
}

// The events of `host` as they arrive, until the one that finishes `operation_id`.
json wait_final_event(kiln::bus::FleetClient& client, const std::string& operation_id, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto inbound = client.next(500ms);
    if (!inbound || inbound->kind != kiln::bus::Inbound::Kind::kEvent) continue;
    const json& op = inbound->body["operation"];
    if (op["id"] == operation_id && (op["state"] == "succeeded" || op["state"] == "failed")) return inbound->body;
  }
  FAIL("no final event for " << operation_id);
  return nullptr;
}

// Instance directories under an instances path (every entry that parses as a uuid).
std::size_t instance_directories(const fs::path& instances) {
  std::size_t count = 0;
  for (const auto& entry : fs::directory_iterator(instances)) {
    if (entry.is_directory() && entry.path().filename().string().size() == 36) ++count;
  }
  return count;
}

}  // namespace

TEST_CASE("kilnctl fleet boot sends a boot to one host's queue and prints the operation's final event") {
  BusHost host(kiln::test::unique_host("boot"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  host.start();
  std::string image = small_image(host.scratch, "bus-boot");
  std::string uuid = kiln::test::random_uuid();
  auto result = fleet(host, {"boot", "--host", host.name, "--image", image, "--uuid", uuid, "--no-start", "--timeout", "180"});
  INFO(result.out << result.err << host.kilnd->log());
  REQUIRE(result.exit_code == 0);
  json event = json::parse(result.out);
  REQUIRE(event["host"] == host.name);
  REQUIRE(event["operation"]["state"] == "succeeded");
  REQUIRE(event["operation"]["uuid"] == uuid);
  REQUIRE(fs::exists(host.instances / uuid / "disk"));
  // The same operation over the socket: one service behind both transports.
  auto over_http = host.kilnd->client().call("GET", "/v1/operations/" + event["operation"]["id"].get<std::string>());
  REQUIRE(over_http.status == 200);
  REQUIRE(over_http.body["state"] == "succeeded");
  // A boot kilnd would refuse is refused by kilnctl as kilnctl boot refuses it: exit 2, the envelope with the pointer.
  auto refused = fleet(host, {"boot", "--host", host.name, "--image", image, "--uuid", "not-a-uuid", "--timeout", "30"});
  INFO(refused.out << refused.err);
  REQUIRE(refused.exit_code == 2);
  json envelope = json::parse(refused.out);
  REQUIRE(envelope["error"]["code"] == "invalid_argument");
  REQUIRE(envelope["error"]["pointer"] == "/uuid");
}

TEST_CASE("a request's reply goes to its reply_to with its correlation id and carries what HTTP would answer") {
  BusHost host(kiln::test::unique_host("reply"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  host.start();
  kiln::bus::FleetClient client(kiln::test::link_options(kiln::test::fixture_broker_url()));
  auto reply = client.call(host.name, "GET", "/v1/cache", nullptr, 30s);
  REQUIRE(reply["host"] == host.name);
  REQUIRE(reply["status"] == 200);
  REQUIRE(reply["body"] == host.kilnd->client().call("GET", "/v1/cache").body);
  // Refused by the boot schema: the same 400 as over HTTP, with the pointer; not a poison message.
  json bad = {{"uuid", "not-a-uuid"}, {"image_id", kiln::test::random_uuid()}, {"flavor", {{"vcpus", 1}, {"memory_mb", 64}, {"root_gb", 1}}}};
  auto refused = client.call(host.name, "POST", "/v1/instances", bad, 30s);
  auto over_http = host.kilnd->client().call("POST", "/v1/instances", bad);
  REQUIRE(refused["status"] == 400);
  REQUIRE(over_http.status == 400);
  REQUIRE(refused["body"] == over_http.body);
  auto missing = client.call(host.name, "GET", "/v1/instances/" + kiln::test::random_uuid(), nullptr, 30s);
  REQUIRE(missing["status"] == 404);
  REQUIRE(missing["body"]["error"]["code"] == "not_found");
}

namespace {

// [amqp] keys for TLS: the CA kilnd checks the broker against, and its own certificate if any.
std::string tls_keys(const std::string& ca, bool client_certificate) {
  std::string keys = "report_interval_seconds = 1\nheartbeat_seconds = 5\nmax_reconnect_backoff_ms = 1000\nca_file = " +
                     kiln::test::fixture_broker_tls(ca).string() + "\n";
  if (client_certificate) {
    keys += "cert_file = " + kiln::test::fixture_broker_tls("client.pem").string() + "\nkey_file = " +
            kiln::test::fixture_broker_tls("client.key").string() + "\n";
  }
  return keys;
}

kiln::bus::LinkOptions tls_link() {
  auto options = kiln::test::link_options(kiln::test::fixture_broker_tls_url());
  options.ca_file = kiln::test::fixture_broker_tls("ca.pem");
  options.cert_file = kiln::test::fixture_broker_tls("client.pem");
  options.key_file = kiln::test::fixture_broker_tls("client.key");
  return options;
}

// Waits a few reconnect rounds and checks kilnd never joined the bus and said why.
void require_refused(BusHost& host, const std::string& reason) {
  host.start({}, false);
  REQUIRE(host.kilnd->client().call("GET", "/healthz").status == 200);  // the socket serves without the bus
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (host.kilnd->log().find("localhost:27153") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  std::this_thread::sleep_for(2s);  // more attempts: none may succeed
  INFO(host.kilnd->log());
  REQUIRE(host.kilnd->log().find(reason) != std::string::npos);
  REQUIRE(host.kilnd->log().find("bus: consuming") == std::string::npos);
  kiln::bus::FleetClient client(tls_link());
  REQUIRE_THROWS_WITH(client.send(host.name, "GET", "/v1/cache"), Catch::Contains("no such host"));
}

}  // namespace

TEST_CASE("over amqps kilnd checks the broker against ca_file and presents its client certificate, and a controller's request is answered") {
  BusHost host(kiln::test::unique_host("tls"), kiln::test::fixture_broker_tls_url(), kiln::test::peers().glance_url,
               tls_keys("ca.pem", true));
  host.start();
  kiln::bus::FleetClient client(tls_link());
  auto reply = client.call(host.name, "GET", "/v1/cache", nullptr, 30s);
  REQUIRE(reply["status"] == 200);
  REQUIRE(reply["body"] == host.kilnd->client().call("GET", "/v1/cache").body);
}

TEST_CASE("over amqps a broker whose certificate does not chain to ca_file is refused, and so is kilnd without a client certificate") {
  SECTION("another CA: the broker is not believed") {
    BusHost host(kiln::test::unique_host("tls-ca"), kiln::test::fixture_broker_tls_url(), kiln::test::peers().glance_url,
                 tls_keys("other-ca.pem", true));
    require_refused(host, "verification failed");
  }
  SECTION("no client certificate: the broker refuses kilnd") {
    BusHost host(kiln::test::unique_host("tls-anon"), kiln::test::fixture_broker_tls_url(), kiln::test::peers().glance_url,
                 tls_keys("ca.pem", false));
    require_refused(host, "localhost:27153");
  }
}

TEST_CASE("a kilnd and a controller that publish less often than the heartbeat keep their links: the next request is answered without a reconnect") {
  // Heartbeat 1 s, state reports every 60 s: after kilnd's first report its
  // publishing link is silent, and so is the controller's while it listens.
  // RabbitMQ closes a connection it hears nothing on for two heartbeat
  // intervals, so both links must send heartbeats while idle.
  BusHost host(kiln::test::unique_host("idle"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url,
               "report_interval_seconds = 60\nheartbeat_seconds = 1\nmax_reconnect_backoff_ms = 1000\n");
  host.start();
  auto options = kiln::test::link_options(kiln::test::fixture_broker_url());
  options.heartbeat = 1s;
  kiln::bus::FleetClient client(options);
  REQUIRE(client.call(host.name, "GET", "/v1/cache", nullptr, 30s)["status"] == 200);
  // Six heartbeat intervals of listening only, as `kilnctl fleet watch` does.
  for (auto until = std::chrono::steady_clock::now() + 6s; std::chrono::steady_clock::now() < until;) client.next(500ms);
  auto reply = client.call(host.name, "GET", "/v1/cache", nullptr, 30s);
  INFO(host.kilnd->log());
  REQUIRE(reply["status"] == 200);
  REQUIRE(host.kilnd->log().find("reconnecting") == std::string::npos);
  REQUIRE(host.kilnd->log().find("(redelivered)") == std::string::npos);
}

TEST_CASE("kilnctl fleet hosts lists every kilnd whose state report arrives, and boot --any picks one of them") {
  BusHost first(kiln::test::unique_host("hosts"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  BusHost second(kiln::test::unique_host("hosts"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  first.start();
  second.start();
  auto result = fleet(first, {"hosts", "--window", "3"});
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  std::map<std::string, json> reports;
  for (const auto& report : json::parse(result.out)) reports[report["host"]] = report;
  REQUIRE(reports.count(first.name) == 1);
  REQUIRE(reports.count(second.name) == 1);
  for (const auto& name : {first.name, second.name}) {
    const json& report = reports[name];
    REQUIRE(report["version"].is_string());
    REQUIRE(report["free_bytes"].get<std::uint64_t>() > 0);
    REQUIRE(report["cache_entries"] == 0);
    REQUIRE(report["running_operations"] == 0);
  }
  // Once the second is gone, its reports stop: a host list is who is alive.
  REQUIRE(second.kilnd->stop(SIGTERM) == 0);
  auto after = fleet(first, {"hosts", "--window", "3"});
  INFO(after.out << after.err);
  REQUIRE(after.exit_code == 0);
  std::set<std::string> alive;
  for (const auto& report : json::parse(after.out)) alive.insert(report["host"].get<std::string>());
  REQUIRE(alive.count(first.name) == 1);
  REQUIRE(alive.count(second.name) == 0);
  // --any: the alive host (bus tests run one at a time, so ours is the only one reporting).
  std::string image = small_image(first.scratch, "bus-any");
  std::string uuid = kiln::test::random_uuid();
  auto any = fleet(first, {"boot", "--any", "--window", "3", "--image", image, "--uuid", uuid, "--no-start", "--timeout", "180"});
  INFO(any.out << any.err);
  REQUIRE(any.exit_code == 0);
  REQUIRE(json::parse(any.out)["host"] == first.name);
  REQUIRE(fs::exists(first.instances / uuid));
}

TEST_CASE("kilnctl fleet precache reaches every alive host through the fanout and each downloads the image once") {
  BusHost first(kiln::test::unique_host("pre"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  BusHost second(kiln::test::unique_host("pre"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  first.start();
  second.start();
  std::string image = small_image(first.scratch, "bus-precache");
  auto result = fleet(first, {"precache", image, "--window", "3", "--timeout", "180"});
  INFO(result.out << result.err << first.kilnd->log() << second.kilnd->log());
  REQUIRE(result.exit_code == 0);
  std::set<std::string> done;
  for (const auto& event : json::parse(result.out)) {
    REQUIRE(event["operation"]["state"] == "succeeded");
    done.insert(event["host"].get<std::string>());
  }
  // Other tests' kilnds may be alive on the same broker: ours must be among the hosts.
  REQUIRE(done.count(first.name) == 1);
  REQUIRE(done.count(second.name) == 1);
  for (const BusHost* host : {&first, &second}) {
    auto cache = host->kilnd->client().call("GET", "/v1/cache");
    REQUIRE(cache.body["bases"].size() == 1);
    REQUIRE(cache.body["bases"][0]["image_id"] == image);
  }
}

TEST_CASE("a request redelivered after kilnd died before its ack is answered with the same operation and boots once") {
  BusHost host(kiln::test::unique_host("redeliver"), kiln::test::fixture_broker_url(), kiln::test::peers().glance_url);
  // The second request's ack never happens: kilnd dies right after replying.
  host.start({{"KILN_FAILPOINT", "bus.request.replied:2"}});
  std::string image = small_image(host.scratch, "bus-redeliver");
  std::string uuid = kiln::test::random_uuid();
  kiln::bus::FleetClient client(kiln::test::link_options(kiln::test::fixture_broker_url()));
  client.watch(kiln::bus::event_key(host.name, "boot"));
  auto first = client.call(host.name, "POST", "/v1/instances", boot_body(uuid, image), 60s);
  REQUIRE(first["status"] == 202);
  std::string operation_id = first["body"]["operation_id"];
  REQUIRE(wait_final_event(client, operation_id, 120s)["operation"]["state"] == "succeeded");
  // A controller that lost the reply sends the boot again; kilnd answers, then dies before the ack.
  auto correlation = client.send(host.name, "POST", "/v1/instances", boot_body(uuid, image));
  REQUIRE(host.kilnd->wait_exit(60s) == 128 + SIGKILL);
  REQUIRE(host.kilnd->log().find("failpoint bus.request.replied reached") != std::string::npos);
  std::vector<json> replies;
  auto collect = [&](std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && replies.size() < 2) {
      auto inbound = client.next(500ms);
      if (inbound && inbound->kind == kiln::bus::Inbound::Kind::kReply && inbound->correlation_id == correlation) {
        replies.push_back(inbound->body);
      }
    }
  };
  collect(5s);
  REQUIRE(replies.size() == 1);  // sent before the death
  host.start();                  // the broker redelivers the unacked request to the new kilnd
  collect(60s);
  INFO(host.kilnd->log());
  REQUIRE(replies.size() == 2);
  for (const auto& reply : replies) {
    REQUIRE(reply["status"] == 202);
    REQUIRE(reply["body"]["operation_id"] == operation_id);
  }
  REQUIRE(host.kilnd->log().find("(redelivered)") != std::string::npos);
  REQUIRE(instance_directories(host.instances) == 1);
  auto listed = host.kilnd->client().call("GET", "/v1/instances");
  REQUIRE(listed.status == 200);
}

TEST_CASE("a message that is not a request goes to kiln.dead with the reason, its sender gets invalid_argument, and kilnd serves on") {
  std::string url = kiln::test::fixture_broker_url();
  BusHost host(kiln::test::unique_host("poison"), url, kiln::test::peers().glance_url);
  host.start();
  kiln::bus::AmqpLink raw(kiln::test::link_options(url));
  std::string reply_queue = raw.declare_queue("", false);
  raw.consume(reply_queue, 10);
  kiln::bus::AmqpLink sender(kiln::test::link_options(url));
  for (const std::string& body : {std::string("not json at all"), std::string("{\"method\":\"GET\"}"), std::string("[1,2]"),
                                 std::string("{\"method\":\"GET\",\"path\":\"/v1/cache\",\"extra\":1}"), std::string("\xff\xfe")}) {
    kiln::bus::Message message;
    message.body = body;
    message.reply_to = reply_queue;
    message.correlation_id = "poison-" + std::to_string(body.size());
    sender.publish(kiln::bus::kRequestExchange, kiln::bus::request_queue(host.name), message);
    std::optional<kiln::bus::Delivery> reply;
    for (int i = 0; i < 60 && !reply; ++i) reply = raw.next_delivery(500ms);
    REQUIRE(reply);
    raw.ack(reply->tag);
    REQUIRE(reply->message.correlation_id == message.correlation_id);
    json answer = json::parse(reply->message.body);
    REQUIRE(answer["status"] == 400);
    REQUIRE(answer["body"]["error"]["code"] == "invalid_argument");
    REQUIRE(answer["body"]["error"]["message"].get<std::string>().find("poison message") == 0);
  }
  // All five wait in kiln.dead, each with why; other tests' dead letters are skipped by host.
  kiln::bus::AmqpLink dead(kiln::test::link_options(url));
  dead.consume(kiln::bus::kDeadLetterQueue, 100);
  std::vector<kiln::bus::Delivery> ours;
  for (int idle = 0; idle < 6 && ours.size() < 5;) {
    auto delivery = dead.next_delivery(500ms);
    if (!delivery) {
      ++idle;
      continue;
    }
    if (delivery->message.headers["x-kiln-host"] == host.name) {
      ours.push_back(*delivery);
      dead.ack(delivery->tag);
    }
  }
  REQUIRE(ours.size() == 5);
  REQUIRE(ours[0].message.body == "not json at all");
  REQUIRE(ours[0].message.headers[kiln::bus::kErrorHeader] == "the message is not JSON");
  REQUIRE(ours[1].message.headers[kiln::bus::kErrorHeader] == "the message has no \"path\" starting with /");
  REQUIRE(ours[2].message.headers[kiln::bus::kErrorHeader] == "the message is not a JSON object");
  REQUIRE(ours[3].message.headers[kiln::bus::kErrorHeader] == "the message has an unknown member \"extra\"");
  REQUIRE(ours[4].message.headers[kiln::bus::kErrorHeader] == "the message is not UTF-8 text");
  kiln::bus::FleetClient client(kiln::test::link_options(url));
  REQUIRE(client.call(host.name, "GET", "/v1/cache", nullptr, 30s)["status"] == 200);
}

TEST_CASE("kilnd started with the broker down serves its socket and joins the bus once the broker is up") {
  kiln::test::Broker broker(27160, false);
  BusHost host(kiln::test::unique_host("late"), broker.url(), kiln::test::peers().glance_url);
  host.start({}, false);  // the broker is down: kilnd serves its socket without the bus
  REQUIRE(host.kilnd->client().call("GET", "/healthz").status == 200);
  for (auto deadline = std::chrono::steady_clock::now() + 30s;
       host.kilnd->log().find("cannot connect to the broker") == std::string::npos &&
       std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(host.kilnd->log().find("cannot connect to the broker") != std::string::npos);
  broker.start();
  kiln::bus::FleetClient client(kiln::test::link_options(broker.url()));
  // Until kilnd has declared its queue, a request to it is refused at once (unroutable), not lost.
  REQUIRE_THROWS_WITH(client.send("nobody-" + host.name, "GET", "/v1/cache"), Catch::Contains("no such host"));
  // Its first state report says it is there (the reconnect backoff tops at 1 s here).
  bool reported = false;
  for (int i = 0; i < 10 && !reported; ++i) {
    for (const auto& report : client.hosts(2s)) reported = reported || report["host"] == host.name;
  }
  INFO(host.kilnd->log());
  REQUIRE(reported);
  auto reply = client.call(host.name, "GET", "/v1/cache", nullptr, 30s);
  REQUIRE(reply["status"] == 200);
}

TEST_CASE("after a broker restart mid-boot kilnd reconnects, redeclares, takes requests and publishes the boot's result") {
  kiln::test::Broker broker(27170);
  BusHost host(kiln::test::unique_host("restart"), broker.url(), kiln::test::peers().glance_url);
  host.start();
  fs::path raw = kiln::test::make_interruptible_raw(host.scratch.path());
  std::string image = kiln::test::upload_image("bus-restart", "raw", raw);
  std::string uuid = kiln::test::random_uuid();
  std::string events = "test.events." + host.name;
  {
    // A durable queue of the test's: events published after the restart land in it.
    kiln::bus::AmqpLink setup(kiln::test::link_options(broker.url()));
    kiln::bus::declare_topology(setup);
    setup.declare_queue(events, true);
    setup.bind(events, kiln::bus::kEventExchange, "kiln.events." + host.name + ".#");
  }
  std::string operation_id;
  {
    kiln::bus::FleetClient client(kiln::test::link_options(broker.url()));
    auto reply = client.call(host.name, "POST", "/v1/instances", boot_body(uuid, image), 60s);
    REQUIRE(reply["status"] == 202);
    operation_id = reply["body"]["operation_id"];
  }
  broker.stop();
  broker.start();
  kiln::bus::AmqpLink reader(kiln::test::link_options(broker.url()));
  reader.consume(events, 100);
  json final_event;
  for (auto deadline = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < deadline && final_event.is_null();) {
    auto delivery = reader.next_delivery(500ms);
    if (!delivery) continue;
    reader.ack(delivery->tag);
    json event = json::parse(delivery->message.body);
    if (event["operation"]["id"] == operation_id &&
        (event["operation"]["state"] == "succeeded" || event["operation"]["state"] == "failed")) {
      final_event = event;
    }
  }
  INFO(host.kilnd->log());
  REQUIRE(final_event["operation"]["state"] == "succeeded");
  REQUIRE(host.kilnd->log().find("reconnected to the broker") != std::string::npos);
  kiln::bus::FleetClient client(kiln::test::link_options(broker.url()));
  REQUIRE(client.call(host.name, "GET", "/v1/instances/" + uuid, nullptr, 30s)["status"] == 200);
}

TEST_CASE("boot --any picks the host with the fewest running operations, then the most free space, and a garbled report last") {
  std::vector<json> reports = {
      {{"host", "busy"}, {"running_operations", 3}, {"free_bytes", 1ULL << 40}},
      {{"host", "full"}, {"running_operations", 0}, {"free_bytes", 1ULL << 20}},
      {{"host", "roomy"}, {"running_operations", 0}, {"free_bytes", 1ULL << 30}},
      {{"host", "garbled"}, {"running_operations", "none"}, {"free_bytes", -1}},
  };
  REQUIRE(kiln::bus::least_loaded(reports) == "roomy");
  reports.erase(reports.begin() + 1, reports.begin() + 3);
  REQUIRE(kiln::bus::least_loaded(reports) == "busy");
  REQUIRE(kiln::bus::least_loaded({{{"host", "silent"}}}) == "silent");
  REQUIRE(kiln::bus::least_loaded({}).empty());
}
