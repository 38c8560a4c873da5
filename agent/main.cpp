// kilnd, the agent controllers talk to: parse flags, take the agent lock,
// listen, reconcile, serve lib/rpc until SIGTERM. Everything it does is a
// lib/ call; this file only wires them to signals, timers and systemd.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <spdlog/spdlog.h>
#include <thread>

#include "agent_lock.h"
#include "kiln/bus/agent_bus.h"
#include "kiln/config/settings.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/reconcile.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/layout.h"
#include "kiln/virt/virt_type.h"
#include "kiln/rpc/server.h"
#include "kiln/rpc/service.h"
#include "kiln/rpc/steps.h"
#include "kiln/util/error.h"
#include "kiln/virt/connection.h"
#include "logging.h"
#include "notify.h"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Blocking work of the RPC routes (disk, libvirt); operations have their own pool.
constexpr unsigned kBlockingThreads = 4;

void log_reconcile(const kiln::instance::ReconcileReport& report) {
  spdlog::info("reconcile: {} instance(s) seen, {} finding(s), {} cache repair(s)", report.instances_seen,
               report.findings.size(), report.cache_repairs.size());
  for (const auto& finding : report.findings) {
    spdlog::warn("reconcile: uuid={} {}: {}", finding.uuid, finding.kind, finding.action);
  }
  for (const auto& repair : report.cache_repairs) {
    spdlog::info("reconcile: {} {}", repair.action, repair.path.string());
  }
}

// Everything that lives while the agent serves, and the reactions to
// signals and timers; all of it runs on the io_context's one thread.
class Agent {
 public:
  Agent(kiln::config::Overrides overrides, const kiln::config::Settings& settings)
      : overrides_(std::move(overrides)),
        service_(settings),
        blocking_pool_(kBlockingThreads),
        server_(io_, blocking_pool_, service_, settings.rpc, settings.tls),
        signals_(io_, SIGTERM, SIGINT, SIGHUP),
        watchdog_timer_(io_),
        cache_timer_(io_),
        cache_manager_interval_(settings.cache_manager_interval),
        shutdown_timeout_(settings.rpc.shutdown_timeout) {
    if (!settings.amqp.url.empty()) {
      bus_ = std::make_unique<kiln::bus::AgentBus>(service_, kiln::bus::bus_options(settings, KILN_VERSION));
    }
  }

  // Binds the socket (throws kAlreadyRunning when another agent answers).
  void listen() { server_.start(); }

  // Serves until SIGTERM/SIGINT and the drain end. Returns true when every
  // operation finished within shutdown_timeout.
  bool run() {
    notifier_.ready();
    notifier_.status("serving");
    wait_for_signal();
    if (auto interval = notifier_.watchdog_interval()) schedule_watchdog(*interval);
    schedule_cache_manager();
    if (bus_) bus_->start();  // its own thread; reconnects on its own
    io_.run();
    if (drain_thread_.joinable()) drain_thread_.join();
    blocking_pool_.join();
    return drained_;
  }

 private:
  void wait_for_signal() {
    signals_.async_wait([this](const boost::system::error_code& error, int signal) {
      if (error) return;
      if (signal == SIGHUP) {
        reload();
        wait_for_signal();
      } else {
        stop(signal);
      }
    });
  }

  void stop(int signal) {
    spdlog::info("kilnd: signal {}: no new work; draining running operations (up to {} s)", signal,
                 shutdown_timeout_.count());
    notifier_.stopping();
    server_.stop_accepting();
    if (bus_) bus_->stop_accepting();
    watchdog_timer_.cancel();
    cache_timer_.cancel();
    // The drain waits on the operations' threads, never on the event loop,
    // which keeps answering GET /v1/operations on open connections meanwhile.
    drain_thread_ = std::thread([this] {
      drained_ = service_.drain(shutdown_timeout_);
      if (bus_) bus_->stop();  // after the drain: the results of the last operations go out first
      if (!drained_) spdlog::warn("kilnd: operations still running after {} s; exiting anyway", shutdown_timeout_.count());
      asio::post(io_, [this] { io_.stop(); });
    });
  }

  void reload() {
    notifier_.reloading();
    asio::post(blocking_pool_, [this] {
      try {
        KILN_FAILPOINT("kilnd.reload.begin");
        auto settings = kiln::config::load_settings(overrides_);
        for (const auto& warning : settings.warnings) spdlog::warn("config: {}", warning);
        auto changed = service_.reload(settings);
        KILN_FAILPOINT("kilnd.reload.applied");
        asio::post(io_, [this, settings, changed] {
          server_.set_limits(settings.rpc);
          if (cache_manager_interval_ != settings.cache_manager_interval) {
            cache_manager_interval_ = settings.cache_manager_interval;
            cache_timer_.cancel();  // its handler sees operation_aborted and does not reschedule
            schedule_cache_manager();
          }
          std::string what;
          for (const auto& item : changed) what += (what.empty() ? "" : ", ") + item;
          spdlog::info("kilnd: SIGHUP: settings reloaded; changed: {}; rpc limits re-read; listeners, "
                       "instances_path and worker counts need a restart",
                       what.empty() ? "nothing" : what);
          notifier_.ready();
        });
      } catch (const kiln::Error& error) {
        spdlog::error("kilnd: SIGHUP: reload refused, old settings stay: [{}] {}", error.code_name(), error.what());
        asio::post(io_, [this] { notifier_.ready(); });
      }
    });
  }

  void schedule_watchdog(std::chrono::microseconds interval) {
    notifier_.watchdog();
    watchdog_timer_.expires_after(interval);
    watchdog_timer_.async_wait([this, interval](const boost::system::error_code& error) {
      if (!error) schedule_watchdog(interval);
    });
  }

  // Aging and the size budget every manager_interval_seconds, on the
  // blocking pool; with 0 it is off, and looks again after a minute in case
  // a reload turned it on.
  void schedule_cache_manager() {
    auto interval = cache_manager_interval_;
    cache_timer_.expires_after(interval.count() > 0 ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval)
                                                    : std::chrono::steady_clock::duration(60s));
    cache_timer_.async_wait([this](const boost::system::error_code& error) {
      if (error) return;
      if (cache_manager_interval_.count() > 0 && !cache_manager_busy_.exchange(true)) {
        asio::post(blocking_pool_, [this] {
          try {
            auto removed = service_.run_cache_manager();
            spdlog::info("cache manager: {} base(s) removed", removed);
          } catch (const kiln::Error& error) {
            spdlog::warn("cache manager: [{}] {}", error.code_name(), error.what());
          }
          cache_manager_busy_ = false;
        });
      }
      schedule_cache_manager();
    });
  }

  kiln::config::Overrides overrides_;
  asio::io_context io_;
  kiln::rpc::Service service_;
  asio::thread_pool blocking_pool_;
  kiln::rpc::Server server_;
  kilnd::SystemdNotifier notifier_;
  asio::signal_set signals_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer cache_timer_;
  std::chrono::seconds cache_manager_interval_;
  std::atomic<bool> cache_manager_busy_{false};
  std::chrono::seconds shutdown_timeout_;
  std::thread drain_thread_;
  std::atomic<bool> drained_{true};
  std::unique_ptr<kiln::bus::AgentBus> bus_;  // [amqp] url set
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kilnd: the kiln agent (RPC on a Unix socket, systemd notify)"};
  kiln::config::Overrides overrides;
  std::string config_file, socket, instances_path, glance, libvirt_uri, virt_type;
  bool debug = false;
  app.add_option("--config", config_file, "configuration file (default /etc/kiln/kiln.conf)");
  app.add_option("--socket", socket, "Unix socket to serve on (beats [rpc] unix_socket)");
  app.add_option("--instances-path", instances_path, "beats [DEFAULT] instances_path");
  app.add_option("--glance", glance, "Glance endpoint(s), comma-separated (beats [glance] api_servers)");
  app.add_option("--libvirt-uri", libvirt_uri, "beats [libvirt] connection_uri");
  app.add_option("--virt-type", virt_type, "kvm or qemu (beats [libvirt] virt_type)");
  app.add_flag("--debug", debug, "log at debug level");
  app.set_version_flag("--version", "kilnd " KILN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;  // kilnctl's usage code
  }
  if (!config_file.empty()) overrides.config_file = config_file;
  if (!socket.empty()) overrides.socket = socket;
  if (!instances_path.empty()) overrides.instances_path = instances_path;
  if (!glance.empty()) overrides.glance = glance;
  if (!libvirt_uri.empty()) overrides.libvirt_uri = libvirt_uri;
  if (!virt_type.empty()) overrides.virt_type = virt_type;

  kilnd::setup_logging(debug);
  bool drained = true;
  try {
    auto settings = kiln::config::load_settings(overrides);
    for (const auto& warning : settings.warnings) spdlog::warn("config: {}", warning);
    KILN_FAILPOINT("kilnd.start.settings_loaded");
    // kilnd serves boots, so a missing instances path is made (as boot
    // does); an existing one must be kiln's: a directory of unrelated files
    // (a wrong path) would be filled with _base and locks.
    {
      std::error_code absent;
      if (std::filesystem::exists(settings.instances_path, absent)) {
        kiln::instance::require_instances_path(settings.instances_path);
      }
    }
    kilnd::AgentLock lock(kiln::layout::agent_lock_path(settings.instances_path));
    KILN_FAILPOINT("kilnd.start.locked");
    auto agent = std::make_unique<Agent>(overrides, settings);
    agent->listen();
    KILN_FAILPOINT("kilnd.start.listening");
    {
      kiln::virt::Connection libvirt(settings.libvirt_uri);
      log_reconcile(kiln::rpc::reconcile(settings, settings.instances_path, libvirt, false));
      KILN_FAILPOINT("kilnd.start.reconciled");
      auto choice = kiln::virt::resolve_virt_type(settings.virt_type, libvirt);
      spdlog::info("kilnd: guests get domain type {}: {}", choice.type, choice.reason);
      // nova leaves the ceph secret to the operator; said at start, and every RBD boot refuses without it.
      if (settings.rbd.enabled && !libvirt.has_ceph_secret(settings.rbd.secret_uuid)) {
        spdlog::warn("kilnd: images_type = rbd, but libvirt has no ceph secret {} (rbd_secret_uuid): RBD boots are "
                     "refused until it is defined (virsh secret-define, secret-set-value)",
                     settings.rbd.secret_uuid);
      }
    }
    spdlog::info("kilnd: ready: instances_path={} socket={} libvirt={} bus={}", settings.instances_path.string(),
                 settings.rpc.unix_socket.string(), settings.libvirt_uri,
                 settings.amqp.url.empty() ? std::string("off") : "kiln." + kiln::bus::bus_options(settings, "").host);
    drained = agent->run();
    if (!drained) {
      // Operations still hold worker threads; the next start's reconcile
      // removes what they leave half-built.
      spdlog::shutdown();
      std::_Exit(0);
    }
    agent.reset();
  } catch (const kiln::Error& error) {
    std::fprintf(stderr, "kilnd: error [%s]: %s\n", std::string(error.code_name()).c_str(), error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kilnd: error [internal_error]: %s\n", error.what());
    return 1;
  }
  spdlog::info("kilnd: stopped");
  return 0;
}
