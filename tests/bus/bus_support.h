// What kiln's bus tests share: private RabbitMQ brokers (tools/peers/rabbitmq,
// under the build tree's bus/ directory, purged by the `bus` fixture's
// cleanup even when a test dies) and kilnd hosts configured for the bus.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "kiln/bus/amqp_link.h"
#include "kilnd_process.h"
#include "scratch.h"

namespace kiln::test {

// The broker the `bus` fixture started (port 27150), shared by tests that never stop it.
std::string fixture_broker_url();
// The same broker's amqps listener (port 27153, certificate for DNS:localhost),
// and a file of its TLS material (tools/peers/rabbitmq): ca.pem, client.pem,
// client.key, other-ca.pem (a CA that signed nothing the broker holds).
std::string fixture_broker_tls_url();
std::filesystem::path fixture_broker_tls(const std::string& file);

// A broker of the test's own, on `port` (and port+1, port+2), stopped and
// removed on destruction.
class Broker {
 public:
  explicit Broker(int port, bool start_now = true);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  void start();
  void stop();  // graceful: clients see connection.close 320
  std::string url() const;
  // Messages the broker received from publishers and delivered to consumers since its last start.
  std::pair<std::uint64_t, std::uint64_t> counts() const;

 private:
  std::filesystem::path dir_;
  int port_;
};

// A kilnd on the bus as host `name`, with its own scratch directory and
// instances path, Glance from the peers fixture, libvirt test:///default;
// `amqp` holds the [amqp] keys besides url.
struct BusHost {
  BusHost(const std::string& name, const std::string& url, const std::string& glance_url,
          const std::string& amqp = "report_interval_seconds = 1\nheartbeat_seconds = 5\nmax_reconnect_backoff_ms = 1000\n");
  std::string name;
  ScratchDir scratch;
  std::filesystem::path instances = scratch / "instances";
  std::filesystem::path socket = scratch / "kiln.sock";
  std::filesystem::path config;
  std::unique_ptr<KilndProcess> kilnd;
  // Starts kilnd (with `environment`) and waits for its socket and, with
  // `join_bus`, until it consumes its queue kiln.<name>: kilnd is ready on
  // its socket before its bus thread has declared the queue, and a request
  // to an undeclared queue is refused as unroutable ("no such host").
  void start(std::map<std::string, std::string> environment = {}, bool join_bus = true);
};

// A unique host name for this test run: "<prefix>-<8 hex>".
std::string unique_host(const std::string& prefix);

kiln::bus::LinkOptions link_options(const std::string& url);

}  // namespace kiln::test
