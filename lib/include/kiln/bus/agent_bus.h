// kilnd on RabbitMQ: the second transport beside HTTP, feeding the same
// transport-free kiln::rpc::Service. Nothing below lib/rpc knows a request
// came over the bus.
//
// On its own thread, AgentBus consumes the durable queue kiln.<host> (bound
// to the "kiln" topic exchange by kiln.<host> and to the "kiln.all" fanout;
// kiln/bus/topology.h), hands each request to Service::handle(), publishes
// the answer to the request's reply_to with its correlation_id, and acks the
// request only then. Service::handle() returns an accepted operation only
// once the operations journal holds it (kiln/rpc/operations.h), so a request
// is acked only after its operation is durable; if kilnd dies or the broker
// goes away before the ack, the broker redelivers it, and a boot's
// idempotency on its uuid answers the same operation again: no second boot.
//
// A message that is not a request envelope (not UTF-8 JSON, no method or
// path) is a poison message: it is republished to the "kiln.dead" exchange
// with an x-kiln-error header saying why (and the sender, if it gave a
// reply_to, gets a 400 invalid_argument reply), then acked, so it never
// loops. A body its route's schema refuses is not poison: it gets the same
// 400 reply HTTP would give.
//
// Operations accepted over the bus are followed: each change of state
// (queued, running, succeeded, failed) is published on "kiln.events" as
// kiln.events.<host>.<kind>, with the operation as GET /v1/operations/{id}
// shows it. Every report_interval a state report goes out as kiln.heartbeat.
//
// Reconnect: any broker or network failure drops both connections (one to
// consume, one to publish: rabbitmq-c wants them apart) and reconnects with
// exponential backoff (100 ms doubling up to max_reconnect_backoff), then
// redeclares the topology. Operations keep running meanwhile; their events
// not yet confirmed by the broker are published after the reconnect.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "kiln/bus/amqp_link.h"
#include "kiln/config/settings.h"
#include "kiln/rpc/service.h"

namespace kiln::bus {

struct AgentBusOptions {
  std::string host;  // the queue is kiln.<host>
  LinkOptions link;
  std::chrono::milliseconds report_interval{10000};
  std::chrono::milliseconds max_reconnect_backoff{5000};
  std::filesystem::path instances_path;  // for free space in state reports
  std::string version;
};

// From [DEFAULT] host (else the hostname) and [amqp].
AgentBusOptions bus_options(const config::Settings& settings, const std::string& version);

class AgentBus {
 public:
  AgentBus(rpc::Service& service, AgentBusOptions options);
  ~AgentBus();  // stop()
  AgentBus(const AgentBus&) = delete;
  AgentBus& operator=(const AgentBus&) = delete;

  void start();
  // Takes no more requests (the consumer goes; unacked requests return to
  // the queue) but keeps publishing events of running operations.
  void stop_accepting();
  // Publishes what is pending if the broker is there (bounded by one
  // publish timeout each), then ends the thread.
  void stop();

  const std::string& host() const { return options_.host; }

 private:
  void run();

  rpc::Service& service_;
  const AgentBusOptions options_;
  std::atomic<bool> accepting_{true};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kiln::bus
