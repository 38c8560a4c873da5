#include "kiln/rpc/service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "backend.h"
#include "kiln/cache/maintenance.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/provision.h"
#include "kiln/rpc/operation_journal.h"
#include "kiln/rpc/schema_validation.h"
#include "kiln/rpc/steps.h"
#include "kiln/rpc/wire.h"
#include "kiln/util/hash.h"
#include "kiln/util/layout.h"
#include "kiln/util/uuid.h"
#include "kiln/virt/connection.h"

namespace kiln::rpc {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// "/v1/instances/abc?x=1" -> {"v1", "instances", "abc"}
std::vector<std::string> path_segments(const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) segments.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return segments;
}

// The value of `name` in the target's query ("/x?wait=5" -> "5"), if given.
std::optional<std::string> query_parameter(const std::string& target, const std::string& name) {
  auto question = target.find('?');
  if (question == std::string::npos) return std::nullopt;
  std::string query = target.substr(question + 1);
  for (std::size_t start = 0; start <= query.size();) {
    auto end = std::min(query.find('&', start), query.size());
    std::string pair = query.substr(start, end - start);
    auto equals = pair.find('=');
    if (pair.substr(0, equals) == name) return equals == std::string::npos ? "" : pair.substr(equals + 1);
    start = end + 1;
  }
  return std::nullopt;
}

// ?wait=SECONDS (decimal, at most kLongestLongPoll): how long a GET of an
// unfinished operation may wait for it to finish before it answers.
constexpr std::chrono::seconds kLongestLongPoll{60};

std::chrono::milliseconds long_poll_wait(const std::string& target) {
  auto text = query_parameter(target, "wait");
  if (!text) return std::chrono::milliseconds(0);
  bool decimal = !text->empty() && text->size() <= 16 && text->find_first_not_of("0123456789.") == std::string::npos &&
                 std::count(text->begin(), text->end(), '.') <= 1 && text->front() != '.';
  double seconds = decimal ? std::stod(*text) : -1;
  if (!(seconds >= 0 && seconds <= kLongestLongPoll.count())) {
    throw Error(ErrorCode::kInvalidArgument, "wait must be a number of seconds from 0 to " +
                                                 std::to_string(kLongestLongPoll.count()) + ", such as 0.5 or 30");
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

// One libvirt connection per blocking thread for the read-only routes
// (a Connection is used from one thread at a time); reopened when the URI
// changes.
thread_local std::unique_ptr<virt::Connection> read_connection;

// This thread's connection to `uri`, opened on first use. Throws
// kLibvirtError when libvirt cannot be reached (the views then degrade).
virt::Connection& thread_connection(const std::string& uri) {
  if (!read_connection || read_connection->uri() != uri) {
    read_connection.reset();
    read_connection = std::make_unique<virt::Connection>(uri);
  }
  return *read_connection;
}

// After a view that found libvirt unreachable: the connection is dropped, so
// a restarted libvirtd is reconnected to on the next request.
void forget_connection_if(bool unreachable) {
  if (unreachable) read_connection.reset();
}

// Runs `f`; an error it throws names `context` in its envelope, as kilnctl's
// does for the same command (a refused request keeps its pointer instead).
template <typename F>
auto about(const ErrorContext& context, F f) {
  try {
    return f();
  } catch (const ContextualError&) {
    throw;
  } catch (const ValidationError&) {
    throw;
  } catch (const Error& error) {
    throw ContextualError(error.code(), error.what(), context);
  }
}

// Where the read routes look: kilnd checked its instances path when it
// started, but a path removed or replaced since must answer as kilnctl
// --direct does (not_an_instances_path), not as an empty host.
void require_served_path(const fs::path& instances_path) { instance::require_instances_path(instances_path); }

// Holds a download slot for its lifetime.
class DownloadSlot {
 public:
  explicit DownloadSlot(std::counting_semaphore<4096>& slots) : slots_(slots) { slots_.acquire(); }
  ~DownloadSlot() { slots_.release(); }
  DownloadSlot(const DownloadSlot&) = delete;
  DownloadSlot& operator=(const DownloadSlot&) = delete;

 private:
  std::counting_semaphore<4096>& slots_;
};

RetentionPolicy retention_of(const config::Settings& settings) {
  return RetentionPolicy{settings.rpc.operation_retention, settings.rpc.max_retained_operations};
}

}  // namespace

Service::Service(const config::Settings& settings)
    : backend_(std::make_shared<Backend>(settings)),
      download_slots_(static_cast<std::ptrdiff_t>(settings.rpc.max_concurrent_downloads)),
      runner_(settings.rpc.max_concurrent_builds, metrics_, layout::operation_journal_path(settings.instances_path),
              retention_of(settings)) {}

Service::~Service() = default;

std::shared_ptr<Backend> Service::backend() const {
  std::lock_guard lock(mutex_);
  return backend_;
}

config::Settings Service::settings() const { return backend()->settings(); }

Response Service::handle(const Request& request) {
  Response response;
  try {
    response = route(request);
  } catch (const ValidationError& error) {
    response.status = 400;
    response.body = error_envelope(error);
  } catch (const Error& error) {
    // The envelope with the error's context (a ContextualError names its uuid).
    response.status = http_status_for(error.code());
    response.body = error_envelope(error);
  } catch (const std::exception& error) {
    response = error_response(ErrorCode::kInternalError, error.what());
  }
  metrics_.count_http_request(response.status);
  // Reads that succeed (operation polling, health checks, scrapes) would
  // flood the journal at info; they are debug. Every change and every error is info or warn.
  auto level = response.status >= 500                         ? spdlog::level::warn
               : request.method == "GET" && response.status < 400 ? spdlog::level::debug
                                                                : spdlog::level::info;
  std::string error_text;
  if (response.status >= 400 && response.body.contains("error")) {
    error_text = " error=" + response.body["error"].value("code", std::string()) + ": " +
                 response.body["error"].value("message", std::string());
  }
  std::string operation_text;
  if (response.body.is_object() && response.body.contains("operation_id")) {
    operation_text = " operation=" + response.body["operation_id"].get<std::string>();
  }
  spdlog::log(level, "rpc {} {} -> {} peer={}{}{}", request.method, request.target, response.status,
              request.peer.describe(), operation_text, error_text);
  return response;
}

Response Service::route(const Request& request) {
  // Nothing kilnd serves is named by bytes that are not UTF-8; the answer
  // quotes the path escaped (error_response).
  if (!is_valid_utf8(request.target)) {
    return error_response(400, ErrorCode::kInvalidArgument, "the request path is not UTF-8: " + request.target);
  }
  auto segments = path_segments(request.target);
  const std::string& method = request.method;
  auto no_body = [&] {
    if (request.body.find_first_not_of(" \t\r\n") != std::string::npos) {
      throw ValidationError(method + " " + request.target + " takes no request body", "");
    }
  };
  auto method_not_allowed = [&] {
    return error_response(405, ErrorCode::kInvalidArgument, method + " is not allowed on " + request.target);
  };

  if (segments.size() == 1 && segments[0] == "healthz") {
    if (method != "GET") return method_not_allowed();
    no_body();
    if (runner_.draining()) return error_response(ErrorCode::kShuttingDown, "the agent is shutting down");
    Response response;
    // What this agent serves, so that a kilnctl pointed elsewhere (another
    // instances path or libvirt) works directly instead of through it.
    auto served = backend()->settings();
    response.body = {{"status", "ok"},
                     {"operations_unfinished", runner_.unfinished()},
                     {"instances_path", served.instances_path.string()},
                     {"libvirt_uri", served.libvirt_uri}};
    return response;
  }
  if (segments.size() == 1 && segments[0] == "metrics") {
    if (method != "GET") return method_not_allowed();
    no_body();
    return metrics_exposition();
  }
  if (segments.empty() || segments[0] != "v1") {
    return error_response(ErrorCode::kNotFound, "no such resource: " + request.target);
  }
  if (segments.size() == 2 && segments[1] == "instances") {
    if (method == "POST") return boot(request);
    if (method == "GET") return no_body(), list_instances();
    return method_not_allowed();
  }
  if (segments.size() == 3 && segments[1] == "instances") {
    if (method == "GET") return no_body(), show_instance(segments[2]);
    if (method == "DELETE") return no_body(), delete_instance(segments[2], request);
    return method_not_allowed();
  }
  if (segments.size() == 4 && segments[1] == "images" && segments[3] == "cache") {
    if (method == "POST") return precache(segments[2], request);
    return method_not_allowed();
  }
  if (segments.size() == 2 && segments[1] == "cache") {
    if (method == "GET") return no_body(), list_cache();
    return method_not_allowed();
  }
  if (segments.size() == 3 && segments[1] == "cache" && segments[2] == "prune") {
    if (method == "POST") return prune(request);
    return method_not_allowed();
  }
  if (segments.size() == 3 && segments[1] == "operations") {
    if (method == "GET") return no_body(), operation(segments[2], long_poll_wait(request.target));
    return method_not_allowed();
  }
  return error_response(ErrorCode::kNotFound, "no such resource: " + request.target);
}

Response Service::accepted(const std::shared_ptr<Operation>& operation) {
  Response response;
  response.status = 202;
  response.headers["Location"] = "/v1/operations/" + operation->id();
  response.body = {{"operation_id", operation->id()}, {"kind", operation->kind()},
                   {"state", state_name(operation->state())}};
  if (!operation->uuid().empty()) response.body["uuid"] = operation->uuid();
  if (!operation->image_id().empty()) response.body["image_id"] = operation->image_id();
  return response;
}

StepHooks Service::hooks_for(Operation& operation) {
  return StepHooks{[&operation](const std::string& step) { operation.set_step(step); },
                   [&operation](std::uint64_t done, std::optional<std::uint64_t> total) {
                     operation.set_bytes(done, total);
                   },
                   [this]() -> std::shared_ptr<void> { return std::make_shared<DownloadSlot>(download_slots_); }};
}

std::shared_ptr<Operation> Service::standing_boot(const std::string& uuid) const {
  auto boot = runner_.latest("boot", uuid);
  if (!boot) return nullptr;
  auto deleted = runner_.latest("delete", uuid);
  // Deleted since: the uuid may be booted again, as a new instance.
  if (deleted && deleted->seq() > boot->seq() && deleted->state() == OperationState::kSucceeded) return nullptr;
  return boot;
}

Response Service::boot(const Request& request) {
  auto [body, boot_request] = parse_boot_request(request.body);
  return about({boot_request.uuid, boot_request.image_id, ""}, [&, &body = body, &boot_request = boot_request] {
    return admit_boot(body, boot_request);
  });
}

Response Service::admit_boot(const json& body, const instance::BootRequest& boot_request) {
  // Only the digest of the body is kept (sorted keys: the same body, the same digest).
  std::string digest = hex_digest_of("sha256", body.dump());
  auto backend = this->backend();

  std::lock_guard lock(mutex_);
  if (auto existing = standing_boot(boot_request.uuid)) {
    if (existing->request_digest() != digest) {
      throw Error(ErrorCode::kConflict, "instance " + boot_request.uuid +
                                            " was already requested with a different body (operation " +
                                            existing->id() + ")");
    }
    if (existing->state() != OperationState::kFailed) return accepted(existing);
  } else {
    refuse_existing_instance(backend->settings().instances_path, boot_request.uuid);
  }
  auto pending_delete = runner_.latest("delete", boot_request.uuid);
  if (pending_delete && !pending_delete->finished()) {
    throw Error(ErrorCode::kConflict, "instance " + boot_request.uuid + " is being deleted (operation " +
                                          pending_delete->id() + ")");
  }

  OperationRequest what{"boot", boot_request.uuid, boot_request.image_id, body.value("metadata", json::object()),
                        digest};
  auto operation = runner_.submit(std::move(what), [this, backend, boot_request](Operation& operation) {
    spdlog::info("operation={} uuid={} image={} boot started", operation.id(), boot_request.uuid,
                 boot_request.image_id);
    const auto& settings = backend->settings();
    StepHooks hooks = hooks_for(operation);
    auto result = rpc::boot(boot_request, backend->cache(), hooks, [&] {
      virt::Connection libvirt(settings.libvirt_uri);
      auto rbd = rpc::rbd_host(settings);
      instance::Host host{settings.instances_path, backend->cache(), libvirt, settings.virt_type, settings.start,
                          settings.instance_name_template, settings.default_ephemeral_format,
                          settings.disk_cache_mode, rbd ? &*rbd : nullptr, hooks.download_slot};
      return instance::provision(boot_request, host, [&operation](std::uint64_t done, std::optional<std::uint64_t> total) {
        operation.set_bytes(done, total);
      });
    }, settings.rbd.enabled);
    note_download(operation, boot_request.image_id, result.base.downloaded_bytes);
    metrics_.count_boot();
    spdlog::info("operation={} uuid={} image={} booted: domain {} {}", operation.id(), boot_request.uuid,
                 boot_request.image_id, result.domain_name, result.domain_state);
    return instance::to_json(result);
  });
  return accepted(operation);
}

void Service::note_download(const Operation& operation, const std::string& image_id, std::uint64_t bytes) {
  metrics_.add_downloaded_bytes(bytes);
  if (bytes > 0) spdlog::info("operation={} image={} downloaded {} bytes", operation.id(), image_id, bytes);
}

Response Service::delete_instance(const std::string& raw_uuid, const Request&) {
  auto backend = this->backend();
  std::string uuid = about({raw_uuid, "", ""}, [&] {
    // As kilnctl --direct refuses before it asks libvirt anything.
    require_served_path(backend->settings().instances_path);
    return normalize_uuid(raw_uuid);
  });
  return about({raw_uuid, "", ""}, [&] { return admit_delete(uuid, backend); });
}

Response Service::admit_delete(const std::string& uuid, const std::shared_ptr<Backend>& backend) {
  std::lock_guard lock(mutex_);
  auto boot = runner_.latest("boot", uuid);
  if (boot && !boot->finished()) {
    throw Error(ErrorCode::kConflict, "instance " + uuid + " is still being booted (operation " + boot->id() + ")");
  }
  auto pending = runner_.latest("delete", uuid);
  if (pending && !pending->finished()) return accepted(pending);
  auto operation = runner_.submit({"delete", uuid, "", nullptr, ""}, [backend, uuid](Operation& operation) {
    std::optional<virt::Connection> libvirt;
    auto rbd = rpc::rbd_host(backend->settings());
    auto result = rpc::delete_instance(uuid, backend->settings().instances_path, [&]() -> virt::Connection& {
      return libvirt.emplace(backend->settings().libvirt_uri);
    }, StepHooks{[&operation](const std::string& step) { operation.set_step(step); }, nullptr, nullptr},
                                       rbd ? &*rbd : nullptr);
    spdlog::info("operation={} uuid={} deleted (domain found: {}, directory found: {})", operation.id(), uuid,
                 result.domain_found, result.directory_found);
    return json(result);
  });
  return accepted(operation);
}

Response Service::precache(const std::string& image_id, const Request& request) {
  validate_body("precache-request", request.body);
  if (!is_canonical_uuid(image_id)) {
    throw ValidationError("'" + image_id + "' in the path is not an image id (a UUID)", "");
  }
  auto backend = this->backend();
  auto received_at = std::chrono::steady_clock::now();
  auto operation = runner_.submit({"precache", "", image_id, nullptr, ""},
                                  [this, backend, image_id, received_at](Operation& operation) {
    auto base = *rpc::fetch_base(backend->cache(), image_id, std::nullopt, received_at, hooks_for(operation));
    note_download(operation, image_id, base.downloaded_bytes);
    return json(base);
  });
  return accepted(operation);
}

Response Service::list_instances() {
  auto backend = this->backend();
  const auto& settings = backend->settings();
  require_served_path(settings.instances_path);
  auto reports = instance::survey_instances(
      settings.instances_path, [&]() -> virt::Connection& { return thread_connection(settings.libvirt_uri); });
  forget_connection_if(!reports.empty() && reports.front().libvirt_unreachable);
  Response response;
  response.body = instance_list_json(reports);
  return response;
}

Response Service::show_instance(const std::string& uuid) {
  auto backend = this->backend();
  const auto& settings = backend->settings();
  return about({uuid, "", ""}, [&] {
    require_served_path(settings.instances_path);
    auto report = rpc::show_instance(settings, uuid, settings.instances_path,
                                     [&]() -> virt::Connection& { return thread_connection(settings.libvirt_uri); });
    forget_connection_if(report.libvirt_unreachable.has_value());
    Response response;
    response.body = instance::to_json(report);
    return response;
  });
}

Response Service::list_cache() {
  auto instances_path = backend()->settings().instances_path;
  require_served_path(instances_path);
  Response response;
  response.body = cache_list_json(cache::list_cache(instances_path), list_pool_bases(backend()->settings()));
  return response;
}

Response Service::prune(const Request& request) {
  json body = validate_body("prune-request", request.body);
  auto backend = this->backend();
  const auto& settings = backend->settings();
  require_served_path(settings.instances_path);
  bool dry_run = body.value("dry_run", false);
  // The pool first: a cluster that cannot be reached fails the prune before _base is touched.
  auto pool_decisions = prune_pool_bases(settings, cache::Clock::now(), dry_run);
  if (!dry_run) cache::repair_cache(settings.instances_path, settings.cache);
  auto decisions = cache::prune_cache(settings.instances_path, settings.cache, cache::Clock::now(), dry_run);
  Response response;
  response.body = prune_json(dry_run, decisions, pool_decisions);
  return response;
}

Response Service::operation(const std::string& id, std::chrono::milliseconds wait) {
  auto operation = runner_.find(id);
  if (!operation) throw Error(ErrorCode::kNotFound, "no operation " + id);
  if (wait.count() > 0 && !operation->finished()) {
    Response pending;
    pending.long_poll = LongPoll{
        [operation](std::function<void()> wake) { return operation->when_finished(std::move(wake)); }, wait,
        [this, id] { return this->operation(id, std::chrono::milliseconds(0)); }};
    return pending;
  }
  Response response;
  response.body = operation->to_json();
  // The status a synchronous call failing the same way answers with, so
  // that a client tells a full local disk (507) from a fault upstream (502)
  // the same way for operations.
  if (response.body.contains("error")) {
    auto code = code_from_name(response.body["error"].value("code", std::string()));
    if (code) response.body["error"]["http_status"] = http_status_for(*code);
  }
  return response;
}

Response Service::metrics_exposition() {
  std::uint64_t bytes = 0;
  std::size_t entries = 0;
  std::error_code error;
  if (fs::exists(layout::base_directory(backend()->settings().instances_path), error)) {
    for (const auto& entry : cache::list_cache(backend()->settings().instances_path)) {
      bytes += entry.physical_bytes;
      ++entries;
    }
  }
  Response response;
  response.text_body = metrics_.exposition(bytes, entries);
  response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return response;
}

std::vector<std::string> Service::reload(const config::Settings& settings) {
  std::vector<std::string> changed;
  auto old = backend()->settings();
  if (old.glance_api_servers.size() != settings.glance_api_servers.size() ||
      old.glance_token != settings.glance_token || old.keystone.has_value() != settings.keystone.has_value() ||
      old.glance_tls.ca_file != settings.glance_tls.ca_file || old.glance_tls.verify != settings.glance_tls.verify) {
    changed.push_back("glance");
  } else {
    for (std::size_t i = 0; i < old.glance_api_servers.size(); ++i) {
      if (old.glance_api_servers[i].to_string() != settings.glance_api_servers[i].to_string()) {
        changed.push_back("glance");
        break;
      }
    }
  }
  const auto& a = old.cache;
  const auto& b = settings.cache;
  if (a.unused_minimum_age != b.unused_minimum_age || a.max_cache_bytes != b.max_cache_bytes ||
      a.remove_unused_base_images != b.remove_unused_base_images ||
      a.eviction_minimum_age != b.eviction_minimum_age || a.lock_timeout != b.lock_timeout ||
      a.failed_download_ttl != b.failed_download_ttl ||
      a.max_cache_percent != b.max_cache_percent || a.reserved_bytes != b.reserved_bytes ||
      a.allowed_disk_formats != b.allowed_disk_formats || a.download_retries != b.download_retries ||
      a.verify_signatures != b.verify_signatures) {
    changed.push_back("image cache policy");
  }
  if (old.cache_manager_interval != settings.cache_manager_interval) changed.push_back("cache manager interval");
  if (old.libvirt_uri != settings.libvirt_uri) changed.push_back("libvirt connection_uri");
  if (old.instances_path != settings.instances_path) {
    throw Error(ErrorCode::kConfigInvalid, "instances_path cannot change without a restart");
  }
  if (old.rpc.operation_retention != settings.rpc.operation_retention ||
      old.rpc.max_retained_operations != settings.rpc.max_retained_operations) {
    changed.push_back("operation retention");
  }
  auto backend = std::make_shared<Backend>(settings);
  runner_.set_retention(retention_of(settings));
  std::lock_guard lock(mutex_);
  backend_ = std::move(backend);
  return changed;
}

std::size_t Service::run_cache_manager() {
  auto backend = this->backend();
  cache::repair_cache(backend->settings().instances_path, backend->settings().cache);
  auto decisions = cache::prune_cache(backend->settings().instances_path, backend->settings().cache,
                                      cache::Clock::now(), false);
  std::size_t removed = 0;
  for (const auto& decision : decisions) {
    if (!decision.removed) continue;
    ++removed;
    spdlog::info("cache manager: removed base {} ({} bytes): {}", decision.name, decision.physical_bytes,
                 decision.reason);
  }
  try {  // images_type = rbd: the pool's bases too, and those in use marked used
    auto pool_decisions = rpc::prune_pool_bases(backend->settings(), std::chrono::system_clock::now(), false);
    for (const auto& decision : pool_decisions.value_or(std::vector<rbd::PoolBasePrune>{})) {
      if (!decision.removed) continue;
      ++removed;
      spdlog::info("cache manager: removed pool base {}/{}: {}", decision.pool, decision.name, decision.reason);
    }
  } catch (const Error& error) {
    spdlog::warn("cache manager: the pool bases were not pruned: {}", error.what());
  }
  return removed;
}

bool Service::drain(std::chrono::milliseconds timeout) { return runner_.drain(timeout); }

}  // namespace kiln::rpc
