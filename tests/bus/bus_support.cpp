#include "bus_support.h"

#include <catch2/catch.hpp>

#include <thread>

#include "kiln/bus/topology.h"
#include "kiln/util/subprocess.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace kiln::test {

std::string fixture_broker_url() { return "amqp://guest:guest@127.0.0.1:27150"; }

std::string fixture_broker_tls_url() { return "amqps://guest:guest@localhost:27153"; }

fs::path fixture_broker_tls(const std::string& file) { return fs::path(KILN_BUS_DIR) / "fixture" / "tls" / file; }

Broker::Broker(int port, bool start_now) : dir_(fs::path(KILN_BUS_DIR) / std::to_string(port)), port_(port) {
  run(Command({KILN_RABBITMQ, "purge", dir_.string()}, {}, 60s));  // a leftover of a killed run
  if (start_now) start();
}

Broker::~Broker() { run(Command({KILN_RABBITMQ, "purge", dir_.string()}, {}, 60s)); }

void Broker::start() {
  auto result = run(Command({KILN_RABBITMQ, "start", dir_.string(), std::to_string(port_)}, {}, 90s));
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

void Broker::stop() {
  auto result = run(Command({KILN_RABBITMQ, "stop", dir_.string()}, {}, 60s));
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

std::string Broker::url() const { return "amqp://guest:guest@127.0.0.1:" + std::to_string(port_); }

std::pair<std::uint64_t, std::uint64_t> Broker::counts() const {
  auto result = run(Command({KILN_RABBITMQ, "count", dir_.string()}, {}, 60s));
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  std::uint64_t received = 0, delivered = 0;
  REQUIRE(std::sscanf(result.out.c_str(), "%lu %lu", &received, &delivered) == 2);
  return {received, delivered};
}

BusHost::BusHost(const std::string& name_, const std::string& url, const std::string& glance_url, const std::string& amqp)
    : name(name_) {
  config = write_kilnd_config(scratch.path(), instances, glance_url, "test:///default", socket,
                              "[DEFAULT]\nhost = " + name + "\n[amqp]\nurl = " + url + "\n" + amqp);
}

void BusHost::start(std::map<std::string, std::string> environment, bool join_bus) {
  kilnd = std::make_unique<KilndProcess>(config, socket, std::move(environment));
  INFO(kilnd->log());
  REQUIRE(kilnd->wait_ready());
  if (!join_bus) return;
  std::string joined = "bus: consuming " + kiln::bus::request_queue(name);
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       kilnd->log().find(joined) == std::string::npos && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  INFO(kilnd->log());
  REQUIRE(kilnd->log().find(joined) != std::string::npos);
}

std::string unique_host(const std::string& prefix) { return prefix + "-" + random_uuid().substr(0, 8); }

kiln::bus::LinkOptions link_options(const std::string& url) {
  kiln::bus::LinkOptions options;
  options.url = url;
  options.heartbeat = 5s;
  return options;
}

}  // namespace kiln::test
