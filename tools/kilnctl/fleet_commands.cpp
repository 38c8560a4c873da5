// kilnctl fleet hosts|boot|precache|watch: a controller's commands, through
// the bus (kiln/bus/fleet_client.h) instead of one host's socket.
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "agent_route.h"
#include "commands.h"
#include "kiln/bus/fleet_client.h"
#include "kiln/bus/topology.h"
#include "kiln/rpc/wire.h"
#include "kiln/util/error.h"

namespace kilnctl {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct FleetOptions {
  std::string url;        // beats [amqp] url
  double window = 12;     // seconds to listen for state reports
  double timeout = 600;   // seconds to wait for replies and results
};

kiln::bus::LinkOptions link_options(const Context& context, const FleetOptions& options) {
  const auto& amqp = context.settings().amqp;
  kiln::bus::LinkOptions link;
  link.url = !options.url.empty() ? options.url : amqp.url;
  if (link.url.empty()) throw kiln::Error(kiln::ErrorCode::kInvalidArgument, "no broker: set [amqp] url or --amqp-url");
  link.ca_file = amqp.ca_file;
  link.cert_file = amqp.cert_file;
  link.key_file = amqp.key_file;
  link.heartbeat = amqp.heartbeat;
  return link;
}

std::chrono::milliseconds ms(double seconds) { return std::chrono::milliseconds(static_cast<long long>(seconds * 1000)); }

std::string operation_text(const json& event) {
  const json& op = event.value("operation", json::object());
  std::string text = event.value("host", std::string("?")) + " " + op.value("kind", std::string()) + " " +
                     op.value("id", std::string()) + " " + op.value("state", std::string());
  if (op.contains("uuid")) text += " uuid=" + op["uuid"].get<std::string>();
  if (op.contains("image_id")) text += " image=" + op["image_id"].get<std::string>();
  if (op.contains("error")) text += " error=[" + op["error"].value("code", std::string()) + "] " + op["error"].value("message", std::string());
  return text + "\n";
}

bool finished(const json& operation) {
  auto state = operation.value("state", std::string());
  return state == "succeeded" || state == "failed";
}

// Waits for the final event of each operation id in `pending` (id -> host);
// returns them by id. Throws kBusError when `timeout` passes first.
std::map<std::string, json> wait_for_results(kiln::bus::FleetClient& client, std::map<std::string, std::string> pending,
                                             std::chrono::milliseconds timeout) {
  std::map<std::string, json> results;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pending.empty()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw kiln::Error(kiln::ErrorCode::kBusError, std::to_string(pending.size()) + " operation(s) not finished within " +
                                                        std::to_string(timeout.count() / 1000) + " s, first " +
                                                        pending.begin()->first + " on " + pending.begin()->second);
    }
    auto inbound = client.next(std::min(left, std::chrono::milliseconds(1000)));
    if (!inbound || inbound->kind != kiln::bus::Inbound::Kind::kEvent || !inbound->body.is_object()) continue;
    const json& op = inbound->body.value("operation", json::object());
    auto id = op.value("id", std::string());
    if (pending.count(id) && finished(op)) {
      results[id] = inbound->body;
      pending.erase(id);
    }
  }
  return results;
}

std::string reply_error(const json& reply) {
  const json& error = reply.value("body", json::object()).value("error", json::object());
  return "[" + error.value("code", std::string("?")) + "] " + error.value("message", std::string("status " + std::to_string(reply.value("status", 0))));
}

void add_connection_options(CLI::App* command, FleetOptions& options) {
  command->add_option("--amqp-url", options.url, "broker URL (beats [amqp] url)");
  command->add_option("--timeout", options.timeout, "seconds to wait for replies and results (default 600)");
}

}  // namespace

void add_fleet_commands(CLI::App& app, Registry& registry) {
  CLI::App* fleet = app.add_subcommand("fleet", "drive many kilnd hosts through the message bus (RabbitMQ)");
  fleet->require_subcommand(1);
  auto options = std::make_shared<FleetOptions>();

  CLI::App* hosts = fleet->add_subcommand("hosts", "the hosts whose state reports arrive within --window seconds");
  add_connection_options(hosts, *options);
  hosts->add_option("--window", options->window, "seconds to listen for state reports (default 12)");
  registry.emplace_back(hosts, [options](Context& context) {
    kiln::bus::FleetClient client(link_options(context, *options));
    auto reports = client.hosts(ms(options->window));
    std::ostringstream text;
    for (const auto& report : reports) {
      text << report.value("host", std::string()) << "  version " << report.value("version", std::string())
           << "  running " << report.value("running_operations", 0) << "  cache " << report.value("cache_entries", 0)
           << "  free " << (report["free_bytes"].is_number() ? human_bytes(report["free_bytes"].get<std::uint64_t>()) : std::string("?"))
           << "\n";
    }
    if (reports.empty()) text << "no host reported within " << options->window << " s\n";
    context.print(json(reports), text.str());
    return reports.empty() ? 1 : 0;
  });

  struct BootOptions {
    std::string host, image, uuid, name;
    bool any = false, no_start = false, no_wait = false;
    unsigned vcpus = 1, memory_mb = 64, root_gb = 0, swap_mb = 0, ephemeral_gb = 0;
  };
  auto boot = std::make_shared<BootOptions>();
  CLI::App* boot_command = fleet->add_subcommand("boot", "boot an instance on one host (--host, or --any: the least loaded alive host)");
  add_connection_options(boot_command, *options);
  auto* host_option = boot_command->add_option("--host", boot->host, "the host ([DEFAULT] host of its kilnd)");
  auto* any_option = boot_command->add_flag("--any", boot->any, "the alive host with the fewest running operations");
  host_option->excludes(any_option);
  boot_command->add_option("--window", options->window, "--any: seconds to listen for state reports (default 12)");
  boot_command->add_option("--image", boot->image, "Glance image id")->required();
  boot_command->add_option("--uuid", boot->uuid, "instance uuid")->required();
  boot_command->add_option("--name", boot->name, "display name (the host's instance_name_template names the domain)")
      ->check(utf8_text());
  boot_command->add_option("--vcpus", boot->vcpus, "virtual CPUs (default 1)");
  boot_command->add_option("--memory-mb", boot->memory_mb, "memory in MiB (default 64)");
  boot_command->add_option("--root-gb", boot->root_gb, "root disk in GiB (0: the image's size)");
  boot_command->add_option("--swap-mb", boot->swap_mb, "swap in MiB (0: none)");
  boot_command->add_option("--ephemeral-gb", boot->ephemeral_gb, "ephemeral disk in GiB (0: none)");
  boot_command->add_flag("--no-start", boot->no_start, "define the domain but do not start it");
  boot_command->add_flag("--no-wait", boot->no_wait, "print the accepted operation and return");
  registry.emplace_back(boot_command, [options, boot](Context& context) {
    if (boot->host.empty() && !boot->any) throw kiln::Error(kiln::ErrorCode::kInvalidArgument, "give --host or --any");
    json body = {{"uuid", boot->uuid}, {"image_id", boot->image}, {"start", !boot->no_start},
                 {"flavor", {{"vcpus", boot->vcpus}, {"memory_mb", boot->memory_mb}, {"root_gb", boot->root_gb},
                             {"swap_mb", boot->swap_mb}, {"ephemeral_gb", boot->ephemeral_gb}}}};
    if (!boot->name.empty()) body["name"] = boot->name;
    // Refused here as kilnctl boot and kilnd refuse it (exit 2), before anything is sent.
    body = kiln::rpc::parse_boot_request(body.dump()).body;
    kiln::bus::FleetClient client(link_options(context, *options));
    std::string host = boot->host;
    if (boot->any) {
      host = kiln::bus::least_loaded(client.hosts(ms(options->window)));
      if (host.empty()) throw kiln::Error(kiln::ErrorCode::kBusError, "no host reported within " + std::to_string(options->window) + " s");
    }
    client.watch(kiln::bus::event_key(host, "boot"));  // before the request: its events cannot be missed
    auto reply = client.call(host, "POST", "/v1/instances", body, ms(options->timeout));
    if (reply.value("status", 0) != 202) {
      std::cerr << "kilnctl: " << host << " refused the boot\n";
      throw_agent_error(reply.value("body", json()), reply.value("status", 0U));
    }
    auto id = reply["body"].value("operation_id", std::string());
    if (boot->no_wait) {
      context.print(reply, host + " accepted boot " + id + "\n");
      return 0;
    }
    auto results = wait_for_results(client, {{id, host}}, ms(options->timeout));
    const json& event = results[id];
    context.print(event, operation_text(event));
    return event["operation"].value("state", std::string()) == "succeeded" ? 0 : 1;
  });

  auto image = std::make_shared<std::string>();
  auto precache_no_wait = std::make_shared<bool>(false);
  CLI::App* precache = fleet->add_subcommand("precache", "download an image into the cache of every alive host (fanout)");
  add_connection_options(precache, *options);
  precache->add_option("image", *image, "Glance image id")->required();
  precache->add_option("--window", options->window, "seconds to listen for state reports first (default 12)");
  precache->add_flag("--no-wait", *precache_no_wait, "return once every alive host accepted");
  registry.emplace_back(precache, [options, image, precache_no_wait](Context& context) {
    kiln::bus::FleetClient client(link_options(context, *options));
    std::set<std::string> alive;
    for (const auto& report : client.hosts(ms(options->window))) alive.insert(report.value("host", std::string()));
    if (alive.empty()) throw kiln::Error(kiln::ErrorCode::kBusError, "no host reported within " + std::to_string(options->window) + " s");
    client.watch("kiln.events.*.precache");
    auto correlation = client.send("", "POST", "/v1/images/" + *image + "/cache", json::object());
    std::map<std::string, std::string> pending;  // operation id -> host
    std::set<std::string> answered;
    int failures = 0;
    auto deadline = std::chrono::steady_clock::now() + ms(options->timeout);
    while (answered.size() < alive.size() && std::chrono::steady_clock::now() < deadline) {
      auto inbound = client.next(1000ms);
      if (!inbound || inbound->kind != kiln::bus::Inbound::Kind::kReply || inbound->correlation_id != correlation) continue;
      auto host = inbound->body.value("host", std::string());
      answered.insert(host);
      if (inbound->body.value("status", 0) == 202) {
        pending[inbound->body["body"].value("operation_id", std::string())] = host;
      } else {
        ++failures;
        std::cerr << "kilnctl: " << host << " refused: " << reply_error(inbound->body) << "\n";
      }
    }
    for (const auto& host : alive) {
      if (!answered.count(host)) {
        ++failures;
        std::cerr << "kilnctl: " << host << " did not answer\n";
      }
    }
    json out = json::array();
    std::string text;
    if (*precache_no_wait) {
      for (const auto& [id, host] : pending) {
        out.push_back({{"host", host}, {"operation_id", id}});
        text += host + " accepted " + id + "\n";
      }
    } else {
      for (const auto& [id, event] : wait_for_results(client, pending, ms(options->timeout))) {
        out.push_back(event);
        text += operation_text(event);
        if (event["operation"].value("state", std::string()) != "succeeded") ++failures;
      }
    }
    context.print(out, text);
    return failures == 0 ? 0 : 1;
  });

  struct WatchOptions {
    bool heartbeats = false;
    unsigned count = 0;
    std::string queue;
  };
  auto watch = std::make_shared<WatchOptions>();
  CLI::App* watch_command = fleet->add_subcommand("watch", "print operation events as they come (one JSON line each with --json)");
  add_connection_options(watch_command, *options);
  watch_command->add_flag("--heartbeats", watch->heartbeats, "print the hosts' state reports too");
  watch_command->add_option("--count", watch->count, "stop after this many messages (default: never)");
  watch_command->add_option("--queue", watch->queue,
                            "a durable queue to watch through: events that come while the broker restarts wait in it, "
                            "and watch reconnects until --timeout");
  registry.emplace_back(watch_command, [options, watch](Context& context) {
    auto connect = [&] {
      auto client = std::make_unique<kiln::bus::FleetClient>(link_options(context, *options), watch->queue);
      client->watch("kiln.events.#");
      if (watch->heartbeats) client->watch(kiln::bus::kHeartbeatKey);
      return client;
    };
    auto client = connect();
    std::cerr << "kilnctl: watching" << std::endl;  // bound: what follows is caught (tests wait for this line)
    unsigned seen = 0;
    auto deadline = std::chrono::steady_clock::now() + ms(options->timeout);
    while (watch->count == 0 || seen < watch->count) {
      if (std::chrono::steady_clock::now() >= deadline) return watch->count == 0 ? 0 : 1;
      std::optional<kiln::bus::Inbound> inbound;
      try {
        if (!client) client = connect();
        inbound = client->next(1000ms);
      } catch (const kiln::Error& error) {
        if (watch->queue.empty()) throw;  // a private queue is gone with the connection
        std::cerr << "kilnctl: [" << error.code_name() << "] " << error.what() << "; reconnecting" << std::endl;
        client.reset();
        std::this_thread::sleep_for(500ms);
        continue;
      }
      if (!inbound || inbound->kind == kiln::bus::Inbound::Kind::kReply) continue;
      ++seen;
      if (context.json_output()) {
        auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
        std::cout << json({{"key", inbound->routing_key}, {"received_at", now}, {"message", inbound->body}}).dump()
                  << std::endl;
      } else if (inbound->kind == kiln::bus::Inbound::Kind::kHeartbeat) {
        std::cout << "heartbeat " << inbound->body.dump() << std::endl;
      } else {
        std::cout << operation_text(inbound->body) << std::flush;
      }
    }
    return 0;
  });
}

}  // namespace kilnctl
