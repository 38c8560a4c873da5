#include "notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstring>

#include <spdlog/spdlog.h>

namespace kilnd {

SystemdNotifier::SystemdNotifier() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
    watchdog_interval_ = std::chrono::microseconds(usec / 2);
  }
}

void SystemdNotifier::ready() { send("READY=1"); }

void SystemdNotifier::stopping() { send("STOPPING=1"); }

void SystemdNotifier::reloading() { send("RELOADING=1"); }

void SystemdNotifier::watchdog() { send("WATCHDOG=1"); }

void SystemdNotifier::status(const std::string& text) {
  std::string line = text;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  send("STATUS=" + line);
}

void SystemdNotifier::send(const std::string& state) {
  // sd_notify returns 0 without NOTIFY_SOCKET: the no-op case.
  int result = sd_notify(/*unset_environment=*/0, state.c_str());
  if (result < 0) {
    spdlog::warn("event=notify_failed state={} error=\"{}\"", state.substr(0, state.find('\n')),
                 std::strerror(-result));
  }
}

}  // namespace kilnd
