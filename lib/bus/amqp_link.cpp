#include "kiln/bus/amqp_link.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <vector>

#include "kiln/util/error.h"

namespace kiln::bus {

namespace {

constexpr amqp_channel_t kChannel = 1;

timeval to_timeval(std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

std::string bytes_string(amqp_bytes_t bytes) {
  return bytes.len == 0 ? std::string() : std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

amqp_bytes_t bytes_of(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}

// The broker's or the library's reason, in words.
std::string describe(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "ok";
    case AMQP_RESPONSE_NONE:
      return "no reply from the broker";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        return "broker closed the connection: " + std::to_string(close->reply_code) + " " +
               bytes_string(close->reply_text);
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* close = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        return "broker closed the channel: " + std::to_string(close->reply_code) + " " +
               bytes_string(close->reply_text);
      }
      return "broker error (method " + std::to_string(reply.reply.id) + ")";
  }
  return "unknown reply";
}

}  // namespace

struct AmqpLink::State {
  amqp_connection_state_t connection = nullptr;
  std::chrono::milliseconds timeout{5000};
  std::uint64_t published = 0;  // publishes on the channel: the delivery tag of the next confirm
  bool broken = false;

  ~State() {
    if (connection == nullptr) return;
    if (!broken) {
      // A clean close tells the broker to requeue nothing twice; bounded by the RPC timeout.
      amqp_channel_close(connection, kChannel, AMQP_REPLY_SUCCESS);
      amqp_connection_close(connection, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(connection);
  }

  [[noreturn]] void fail(const std::string& what) {
    broken = true;
    throw Error(ErrorCode::kBusError, what);
  }

  void check(const char* what) {
    auto reply = amqp_get_rpc_reply(connection);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) fail(std::string(what) + ": " + describe(reply));
  }

  // A connection.close or channel.close from the broker ends the link, saying why.
  void fail_if_closed(const amqp_frame_t& frame) {
    if (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      auto* close = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
      fail("broker closed the connection: " + std::to_string(close->reply_code) + " " + bytes_string(close->reply_text));
    }
    if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
      auto* close = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
      fail("broker closed the channel: " + std::to_string(close->reply_code) + " " + bytes_string(close->reply_text));
    }
  }
};

AmqpLink::AmqpLink(const LinkOptions& options) : state_(std::make_unique<State>()) {
  state_->timeout = options.timeout;
  std::vector<char> url(options.url.begin(), options.url.end());
  url.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(url.data(), &info) != AMQP_STATUS_OK) {
    throw Error(ErrorCode::kInvalidArgument, "[amqp] url is not an amqp:// or amqps:// URL");
  }
  // "amqp://host:port/" names the vhost "" to rabbitmq-c; everyone means the default "/".
  if (info.vhost == nullptr || info.vhost[0] == '\0') info.vhost = const_cast<char*>("/");
  state_->connection = amqp_new_connection();
  if (state_->connection == nullptr) throw Error(ErrorCode::kBusError, "cannot allocate an AMQP connection");
  amqp_socket_t* socket = nullptr;
  if (info.ssl) {
    socket = amqp_ssl_socket_new(state_->connection);
    if (socket == nullptr) state_->fail("cannot create a TLS socket");
    amqp_ssl_socket_set_verify_peer(socket, 1);
    amqp_ssl_socket_set_verify_hostname(socket, 1);
    if (!options.ca_file.empty() && amqp_ssl_socket_set_cacert(socket, options.ca_file.c_str()) != AMQP_STATUS_OK) {
      state_->fail("cannot load [amqp] ca_file " + options.ca_file);
    }
    if (!options.cert_file.empty() &&
        amqp_ssl_socket_set_key(socket, options.cert_file.c_str(), options.key_file.c_str()) != AMQP_STATUS_OK) {
      state_->fail("cannot load [amqp] cert_file/key_file " + options.cert_file);
    }
  } else {
    socket = amqp_tcp_socket_new(state_->connection);
    if (socket == nullptr) state_->fail("cannot create a socket");
  }
  timeval tv = to_timeval(options.timeout);
  amqp_set_handshake_timeout(state_->connection, &tv);
  amqp_set_rpc_timeout(state_->connection, &tv);
  std::string where = std::string(info.host) + ":" + std::to_string(info.port);
  int status = amqp_socket_open_noblock(socket, info.host, info.port, &tv);
  if (status != AMQP_STATUS_OK) state_->fail("cannot connect to the broker at " + where + ": " + amqp_error_string2(status));
  auto login = amqp_login(state_->connection, info.vhost, 0, 131072, static_cast<int>(options.heartbeat.count()),
                          AMQP_SASL_METHOD_PLAIN, info.user, info.password);
  if (login.reply_type != AMQP_RESPONSE_NORMAL) state_->fail("cannot log in to the broker at " + where + ": " + describe(login));
  amqp_channel_open(state_->connection, kChannel);
  state_->check("channel.open");
  amqp_confirm_select(state_->connection, kChannel);
  state_->check("confirm.select");
}

AmqpLink::~AmqpLink() = default;

void AmqpLink::declare_exchange(const std::string& name, ExchangeType type) {
  amqp_exchange_declare(state_->connection, kChannel, bytes_of(name),
                        amqp_cstring_bytes(type == ExchangeType::kTopic ? "topic" : "fanout"), 0, 1, 0, 0,
                        amqp_empty_table);
  state_->check(("exchange.declare " + name).c_str());
}

std::string AmqpLink::declare_queue(const std::string& name, bool durable) {
  auto* ok = amqp_queue_declare(state_->connection, kChannel, name.empty() ? amqp_empty_bytes : bytes_of(name), 0,
                                durable ? 1 : 0, durable ? 0 : 1, durable ? 0 : 1, amqp_empty_table);
  state_->check(("queue.declare " + name).c_str());
  return bytes_string(ok->queue);
}

void AmqpLink::bind(const std::string& queue, const std::string& exchange, const std::string& key) {
  amqp_queue_bind(state_->connection, kChannel, bytes_of(queue), bytes_of(exchange), bytes_of(key), amqp_empty_table);
  state_->check(("queue.bind " + queue + " to " + exchange).c_str());
}

void AmqpLink::consume(const std::string& queue, unsigned prefetch) {
  amqp_basic_qos(state_->connection, kChannel, 0, static_cast<uint16_t>(prefetch), 0);
  state_->check("basic.qos");
  amqp_basic_consume(state_->connection, kChannel, bytes_of(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  state_->check(("basic.consume " + queue).c_str());
}

void AmqpLink::publish(const std::string& exchange, const std::string& routing_key, const Message& message) {
  if (state_->broken) state_->fail("the link is broken");
  // The confirms of earlier publishes were decoded into the connection's
  // pool; nothing refers to them any more. A link that only publishes never
  // passes through next_delivery(), so without this its pool would grow for
  // as long as kilnd runs.
  amqp_maybe_release_buffers(state_->connection);
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.content_type = amqp_cstring_bytes("application/json");
  props.delivery_mode = message.persistent ? AMQP_DELIVERY_PERSISTENT : AMQP_DELIVERY_NONPERSISTENT;
  if (!message.reply_to.empty()) {
    props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
    props.reply_to = bytes_of(message.reply_to);
  }
  if (!message.correlation_id.empty()) {
    props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    props.correlation_id = bytes_of(message.correlation_id);
  }
  if (!message.message_id.empty()) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = bytes_of(message.message_id);
  }
  std::vector<amqp_table_entry_t> entries;
  for (const auto& [key, value] : message.headers) {
    amqp_table_entry_t entry{};
    entry.key = bytes_of(key);
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = bytes_of(value);
    entries.push_back(entry);
  }
  if (!entries.empty()) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = static_cast<int>(entries.size());
    props.headers.entries = entries.data();
  }
  int status = amqp_basic_publish(state_->connection, kChannel, bytes_of(exchange), bytes_of(routing_key),
                                  message.mandatory ? 1 : 0, 0, &props, bytes_of(message.body));
  if (status != AMQP_STATUS_OK) state_->fail(std::string("publish: ") + amqp_error_string2(status));
  std::uint64_t tag = ++state_->published;
  // rabbitmq-c 0.11 has no confirm wait: read frames until the basic.ack that covers `tag`.
  auto deadline = std::chrono::steady_clock::now() + state_->timeout;
  bool returned = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) state_->fail("the broker did not confirm a publish to " + exchange + " within " +
                                        std::to_string(state_->timeout.count()) + " ms");
    timeval tv = to_timeval(left);
    amqp_frame_t frame{};
    status = amqp_simple_wait_frame_noblock(state_->connection, &frame, &tv);
    if (status == AMQP_STATUS_TIMEOUT) continue;
    if (status != AMQP_STATUS_OK) state_->fail(std::string("waiting for a confirm: ") + amqp_error_string2(status));
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* ack = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        if (ack->delivery_tag == tag || (ack->multiple && ack->delivery_tag >= tag)) {
          if (returned) {
            throw Error(ErrorCode::kBusError, "no queue takes messages for '" + routing_key + "' on exchange '" +
                                                  exchange + "' (no such host?)");
          }
          return;
        }
        break;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        // The broker hands back the message (header and body frames follow), then confirms it.
        returned = true;
        amqp_message_t back{};
        auto reply = amqp_read_message(state_->connection, kChannel, &back, 0);
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) state_->fail("reading a returned message: " + describe(reply));
        amqp_destroy_message(&back);
        break;
      }
      case AMQP_BASIC_NACK_METHOD:
        state_->fail("the broker refused (nack) a publish to " + exchange);
      default:
        state_->fail_if_closed(frame);
        break;
    }
  }
}

std::optional<Delivery> AmqpLink::next_delivery(std::chrono::milliseconds timeout) {
  if (state_->broken) state_->fail("the link is broken");
  amqp_maybe_release_buffers(state_->connection);
  amqp_envelope_t envelope{};
  timeval tv = to_timeval(timeout);
  auto reply = amqp_consume_message(state_->connection, &envelope, &tv, 0);
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT) {
    return std::nullopt;
  }
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
    // Not a delivery: read the frame that is waiting (a close, a cancel, a stray confirm).
    amqp_frame_t frame{};
    timeval wait = to_timeval(state_->timeout);
    int status = amqp_simple_wait_frame_noblock(state_->connection, &frame, &wait);
    if (status != AMQP_STATUS_OK) state_->fail(std::string("reading from the broker: ") + amqp_error_string2(status));
    if (frame.frame_type == AMQP_FRAME_METHOD) {
      state_->fail_if_closed(frame);
      if (frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
        state_->fail("the broker cancelled the consumer (queue deleted?)");
      }
    }
    return std::nullopt;
  }
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) state_->fail("consuming: " + describe(reply));
  Delivery delivery;
  delivery.tag = envelope.delivery_tag;
  delivery.redelivered = envelope.redelivered != 0;
  delivery.exchange = bytes_string(envelope.exchange);
  delivery.routing_key = bytes_string(envelope.routing_key);
  delivery.message.body = bytes_string(envelope.message.body);
  const auto& props = envelope.message.properties;
  if (props._flags & AMQP_BASIC_REPLY_TO_FLAG) delivery.message.reply_to = bytes_string(props.reply_to);
  if (props._flags & AMQP_BASIC_CORRELATION_ID_FLAG) delivery.message.correlation_id = bytes_string(props.correlation_id);
  if (props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) delivery.message.message_id = bytes_string(props.message_id);
  if (props._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < props.headers.num_entries; ++i) {
      const auto& entry = props.headers.entries[i];
      if (entry.value.kind == AMQP_FIELD_KIND_UTF8 || entry.value.kind == AMQP_FIELD_KIND_BYTES) {
        delivery.message.headers[bytes_string(entry.key)] = bytes_string(entry.value.value.bytes);
      }
    }
  }
  delivery.message.persistent = (props._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && props.delivery_mode == AMQP_DELIVERY_PERSISTENT;
  amqp_destroy_envelope(&envelope);
  return delivery;
}

void AmqpLink::keep_alive() {
  if (state_->broken) state_->fail("the link is broken");
  amqp_maybe_release_buffers(state_->connection);
  // rabbitmq-c sends a due heartbeat and swallows the broker's inside its
  // frame wait; a zero timeout makes that wait a poll.
  for (;;) {
    amqp_frame_t frame{};
    timeval now{};
    int status = amqp_simple_wait_frame_noblock(state_->connection, &frame, &now);
    if (status == AMQP_STATUS_TIMEOUT) return;
    if (status != AMQP_STATUS_OK) state_->fail(std::string("keeping the link alive: ") + amqp_error_string2(status));
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    if (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      auto* close = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
      state_->fail("broker closed the connection: " + std::to_string(close->reply_code) + " " +
                   bytes_string(close->reply_text));
    }
    if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
      auto* close = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
      state_->fail("broker closed the channel: " + std::to_string(close->reply_code) + " " +
                   bytes_string(close->reply_text));
    }
  }
}

void AmqpLink::ack(std::uint64_t tag) {
  int status = amqp_basic_ack(state_->connection, kChannel, tag, 0);
  if (status != AMQP_STATUS_OK) state_->fail(std::string("basic.ack: ") + amqp_error_string2(status));
}

}  // namespace kiln::bus
