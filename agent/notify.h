// SystemdNotifier — kilnd's side of the sd_notify(3) protocol.
//
// systemd starts kilnd as a Type=notify service: it counts the agent as
// started only after READY=1, restarts it when WatchdogSec passes without a
// WATCHDOG=1, and shows STATUS= lines in `systemctl status`. A notifier reads
// NOTIFY_SOCKET and WATCHDOG_USEC (through libsystemd) when constructed; when
// NOTIFY_SOCKET is unset (kilnd run by hand, in a test, in a container) every
// call is a no-op, so callers never branch on how the agent was started.
// A failed send is logged as a warning and otherwise ignored: the agent must
// not stop serving because its supervisor's socket went away.
// Safe to call from several threads (each call is one datagram).
//
// The order systemd expects:
//   ready()                once, after config, lock, reconcile and listening;
//   watchdog()             every watchdog_interval() while the agent is healthy;
//   reloading() ... ready()  around a SIGHUP reload: RELOADING=1 must be
//                          followed by READY=1 once the reload is done (or has
//                          failed and the old settings stay), or systemd keeps
//                          the unit in "reloading";
//   stopping()             once, when SIGTERM starts the drain.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace kilnd {

class SystemdNotifier {
 public:
  // Reads WATCHDOG_USEC (honouring WATCHDOG_PID, as sd_watchdog_enabled does).
  SystemdNotifier();

  void ready();      // READY=1
  void stopping();   // STOPPING=1
  void reloading();  // RELOADING=1; send ready() when the reload ends
  void watchdog();   // WATCHDOG=1
  // STATUS=<text>; line breaks become spaces (the protocol is one assignment a line).
  void status(const std::string& text);

  // How often to call watchdog(): half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
  // advises; nullopt when the unit sets no watchdog.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_interval_; }

 private:
  void send(const std::string& state);

  std::optional<std::chrono::microseconds> watchdog_interval_;
};

}  // namespace kilnd
