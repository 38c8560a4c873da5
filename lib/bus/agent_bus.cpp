#include "kiln/bus/agent_bus.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <spdlog/spdlog.h>

#include "kiln/bus/topology.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"

namespace kiln::bus {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// How long one wait for a request lasts: the loop's tick for events, reports
// and the AMQP heartbeat (sent only inside library calls).
constexpr auto kTick = 200ms;

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// An operation accepted over the bus whose events are still to publish.
struct Tracked {
  std::string kind;
  std::string published_state;  // the state last confirmed by the broker, "" for none
};

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

rpc::Request get(const std::string& target) {
  rpc::Request request;
  request.method = "GET";
  request.target = target;
  request.peer.address = "amqp";
  return request;
}

// One connected session: both links, until one fails (kBusError) or stop.
class Session {
 public:
  Session(rpc::Service& service, const AgentBusOptions& options, std::map<std::string, Tracked>& tracked,
          const std::atomic<bool>& accepting)
      : service_(service), options_(options), tracked_(tracked), accepting_(accepting), out_(options.link) {
    declare_topology(out_);
    if (accepting_) open_consumer();
  }

  // One tick: a request if one comes within kTick, then events and the report.
  void tick() {
    if (in_ && !accepting_) {
      in_.reset();  // unacked requests go back to the queue for the next kilnd
      spdlog::info("bus: no longer consuming {}", request_queue(options_.host));
    }
    if (in_) {
      if (auto delivery = in_->next_delivery(kTick)) handle(*delivery);
    } else {
      std::this_thread::sleep_for(kTick);
    }
    publish_events();
    out_.keep_alive();  // events and reports may be rarer than the broker's heartbeat timeout
    auto now = std::chrono::steady_clock::now();
    if (now >= next_report_) {
      report();
      next_report_ = now + options_.report_interval;
    }
  }

  void publish_events() {
    for (auto it = tracked_.begin(); it != tracked_.end();) {
      auto response = service_.handle(get("/v1/operations/" + it->first));
      if (response.status != 200) {  // forgotten (retention): nothing more will happen to it
        it = tracked_.erase(it);
        continue;
      }
      std::string state = response.body.value("state", std::string());
      if (state != it->second.published_state) {
        Message event;
        event.body = json({{"host", options_.host}, {"operation", response.body}}).dump();
        event.message_id = it->first + "." + state;
        out_.publish(kEventExchange, event_key(options_.host, it->second.kind), event);
        it->second.published_state = state;
      }
      if (state == "succeeded" || state == "failed") {
        it = tracked_.erase(it);
      } else {
        ++it;
      }
    }
  }

 private:
  void open_consumer() {
    in_.emplace(options_.link);
    auto queue = request_queue(options_.host);
    declare_topology(*in_);
    in_->declare_queue(queue, true);
    in_->bind(queue, kRequestExchange, queue);
    in_->bind(queue, kFanoutExchange, "");
    // A few at a time: each is handled before the next, and the rest stay
    // in the queue (visible to an operator) rather than in kilnd's memory.
    in_->consume(queue, 4);
    spdlog::info("bus: consuming {}", queue);
  }

  void handle(const Delivery& delivery) {
    rpc::Request request;
    try {
      request = parse_request(delivery.message.body);
    } catch (const Error& error) {
      dead_letter(delivery, error.what());
      return;
    }
    auto response = service_.handle(request);
    spdlog::info("bus: {} {} -> {}{}", request.method, request.target, response.status,
                 delivery.redelivered ? " (redelivered)" : "");
    if (response.status == 202 && response.body.contains("operation_id")) {
      std::string id = response.body["operation_id"].get<std::string>();
      tracked_.try_emplace(id, Tracked{response.body.value("kind", std::string("operation")), ""});
    }
    if (!delivery.message.reply_to.empty()) {
      Message reply;
      reply.body = reply_json(options_.host, response).dump();
      reply.correlation_id = delivery.message.correlation_id;
      reply.persistent = false;
      // The default exchange routes by queue name: reply_to is the queue.
      out_.publish("", delivery.message.reply_to, reply);
    }
    // A death here leaves the request unacked: the broker redelivers it.
    KILN_FAILPOINT("bus.request.replied");
    in_->ack(delivery.tag);
  }

  void dead_letter(const Delivery& delivery, const std::string& why) {
    spdlog::warn("bus: poison message on {} dead-lettered: {}", delivery.routing_key, why);
    Message dead = delivery.message;
    dead.headers[kErrorHeader] = why;
    dead.headers["x-kiln-host"] = options_.host;
    dead.reply_to.clear();
    out_.publish(kDeadLetterExchange, delivery.routing_key, dead);
    if (!delivery.message.reply_to.empty()) {
      Message reply;
      reply.body = reply_json(options_.host, rpc::error_response(ErrorCode::kInvalidArgument, "poison message: " + why)).dump();
      reply.correlation_id = delivery.message.correlation_id;
      reply.persistent = false;
      out_.publish("", delivery.message.reply_to, reply);
    }
    in_->ack(delivery.tag);
  }

  void report() {
    json state = {{"host", options_.host}, {"version", options_.version}, {"sent_at", unix_now()},
                  {"running_operations", tracked_.size()}};
    struct statvfs fs {};
    if (::statvfs(options_.instances_path.c_str(), &fs) == 0) {
      state["free_bytes"] = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
    } else {
      state["free_bytes"] = nullptr;
    }
    auto cache = service_.handle(get("/v1/cache"));
    state["cache_entries"] = cache.status == 200 ? cache.body.value("bases", json::array()).size() : 0;
    Message message;
    message.body = state.dump();
    message.persistent = false;  // a report is stale by the next one
    out_.publish(kEventExchange, kHeartbeatKey, message);
  }

  rpc::Service& service_;
  const AgentBusOptions& options_;
  std::map<std::string, Tracked>& tracked_;
  const std::atomic<bool>& accepting_;
  AmqpLink out_;
  std::optional<AmqpLink> in_;
  std::chrono::steady_clock::time_point next_report_{};
};

}  // namespace

AgentBusOptions bus_options(const config::Settings& settings, const std::string& version) {
  AgentBusOptions options;
  options.host = settings.host.empty() ? hostname() : settings.host;
  options.link.url = settings.amqp.url;
  options.link.ca_file = settings.amqp.ca_file;
  options.link.cert_file = settings.amqp.cert_file;
  options.link.key_file = settings.amqp.key_file;
  options.link.heartbeat = settings.amqp.heartbeat;
  options.report_interval = settings.amqp.report_interval;
  options.max_reconnect_backoff = settings.amqp.max_reconnect_backoff;
  options.instances_path = settings.instances_path;
  options.version = version;
  return options;
}

AgentBus::AgentBus(rpc::Service& service, AgentBusOptions options) : service_(service), options_(std::move(options)) {}

AgentBus::~AgentBus() { stop(); }

void AgentBus::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void AgentBus::stop_accepting() { accepting_ = false; }

void AgentBus::stop() {
  accepting_ = false;
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void AgentBus::run() {
  std::map<std::string, Tracked> tracked;  // outlives sessions: results are published after a reconnect
  std::chrono::milliseconds backoff = 100ms;
  std::string last_error;
  while (!stopping_) {
    try {
      Session session(service_, options_, tracked, accepting_);
      if (!last_error.empty()) spdlog::info("bus: reconnected to the broker");
      last_error.clear();
      backoff = 100ms;
      while (!stopping_) session.tick();
      session.publish_events();  // what finished during the drain
      return;
    } catch (const Error& error) {
      if (error.what() != last_error) spdlog::warn("bus: [{}] {}; reconnecting", error.code_name(), error.what());
      last_error = error.what();
    } catch (const std::exception& error) {
      spdlog::error("bus: unexpected: {}; reconnecting", error.what());
      last_error = error.what();
    }
    // Sleep the backoff in ticks so stop() is never held up for long.
    auto until = std::chrono::steady_clock::now() + backoff;
    while (!stopping_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(50ms);
    backoff = std::min(backoff * 2, options_.max_reconnect_backoff);
  }
}

}  // namespace kiln::bus
