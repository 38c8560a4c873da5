// One AMQP 0-9-1 connection to RabbitMQ with one channel, through
// rabbitmq-c (librabbitmq): what kiln's bus (kiln/bus/agent_bus.h) and its
// controller (kiln/bus/fleet_client.h) need and nothing else.
//
// A link promises: connecting is bounded in time (TCP connect, the AMQP
// handshake and every RPC time out); every publish is persistent by default
// and waits for the broker's confirm, so publish() returning means the broker
// has the message; deliveries are taken one at a time with a timeout and
// acked explicitly. Any failure (socket error, connection.close from the
// broker, a missed confirm) throws kiln::Error kBusError and leaves the link
// unusable: the owner drops it and connects a new one (reconnect and
// redeclare are the owner's job, which knows what to redeclare).
//
// rabbitmq-c connections are not thread-safe: a link belongs to one thread.
// AMQP heartbeats are sent only inside library calls, so the owner calls
// next_delivery() (or anything else) at least every heartbeat/2.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace kiln::bus {

// Where the broker is and how to trust it ([amqp] in kiln.conf).
struct LinkOptions {
  std::string url = "amqp://guest:guest@127.0.0.1:5672/";  // amqp:// or amqps://
  std::string ca_file;    // amqps: the CA the broker's certificate chains to
  std::string cert_file;  // amqps: client certificate (with key_file), optional
  std::string key_file;
  std::chrono::seconds heartbeat{10};
  std::chrono::milliseconds timeout{5000};  // connect, handshake, each RPC, each confirm
};

struct Message {
  std::string body;
  std::string reply_to;
  std::string correlation_id;
  std::string message_id;
  std::map<std::string, std::string> headers;  // string headers only
  bool persistent = true;
  // Unroutable (no queue bound for the key) makes publish() throw kBusError
  // instead of the broker dropping it silently.
  bool mandatory = false;
};

struct Delivery {
  std::uint64_t tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  Message message;
};

enum class ExchangeType { kTopic, kFanout };

class AmqpLink {
 public:
  // Connects, logs in, opens channel 1 and turns on publisher confirms.
  // Throws kBusError (with the broker's or the socket's reason), or
  // kInvalidArgument for a URL rabbitmq-c cannot parse.
  explicit AmqpLink(const LinkOptions& options);
  ~AmqpLink();
  AmqpLink(const AmqpLink&) = delete;
  AmqpLink& operator=(const AmqpLink&) = delete;

  void declare_exchange(const std::string& name, ExchangeType type);
  // Durable, or exclusive and auto-deleted (a controller's private queue).
  // "" lets the broker name it. Returns the queue's name.
  std::string declare_queue(const std::string& name, bool durable);
  void bind(const std::string& queue, const std::string& exchange, const std::string& key);
  // Starts consuming `queue` with manual acks, at most `prefetch` unacked.
  void consume(const std::string& queue, unsigned prefetch);

  // Publishes and waits for the broker's confirm (kBusError on nack or timeout).
  void publish(const std::string& exchange, const std::string& routing_key, const Message& message);

  // The next delivery, or nothing after `timeout`.
  std::optional<Delivery> next_delivery(std::chrono::milliseconds timeout);
  void ack(std::uint64_t tag);

  // Sends a heartbeat if one is due and reads what the broker sent, without
  // waiting. A link that only publishes now and then (kilnd's events, a
  // controller's requests) calls it every tick: otherwise the broker, hearing
  // nothing for two heartbeat intervals, closes it, and the next publish
  // fails. Only for a link that does not consume (a delivery read here
  // would be lost). Throws kBusError if the broker closed the connection or
  // the socket broke.
  void keep_alive();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kiln::bus
