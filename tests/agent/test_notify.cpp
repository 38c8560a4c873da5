// SystemdNotifier against a real NOTIFY_SOCKET datagram socket, as systemd binds it.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

#include "kiln/util/fs.h"
#include "notify.h"
#include "scratch.h"

namespace {

// Plays systemd's part: binds a datagram socket and points NOTIFY_SOCKET at
// it for the test's lifetime.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) {
    socket_ = kiln::UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    REQUIRE(socket_.valid());
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof address.sun_path);
    std::strcpy(address.sun_path, path.c_str());
    REQUIRE(::bind(socket_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{2, 0};
    REQUIRE(::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  }
  ~NotifySocket() { ::unsetenv("NOTIFY_SOCKET"); }

  // The next datagram, or "" after two seconds of silence.
  std::string receive() {
    char buffer[4096];
    ssize_t count = ::recv(socket_.get(), buffer, sizeof buffer, 0);
    return count > 0 ? std::string(buffer, static_cast<std::size_t>(count)) : std::string();
  }

 private:
  kiln::UniqueFd socket_;
};

}  // namespace

TEST_CASE("the notifier tells systemd READY, WATCHDOG, RELOADING, STATUS and STOPPING", "[notify]") {
  kiln::test::ScratchDir scratch;
  NotifySocket systemd(scratch / "notify");
  kilnd::SystemdNotifier notifier;

  notifier.ready();
  REQUIRE(systemd.receive() == "READY=1");
  notifier.watchdog();
  REQUIRE(systemd.receive() == "WATCHDOG=1");
  notifier.reloading();
  REQUIRE(systemd.receive() == "RELOADING=1");
  notifier.status("serving 3 operations");
  REQUIRE(systemd.receive() == "STATUS=serving 3 operations");
  notifier.status("two\nlines");
  REQUIRE(systemd.receive() == "STATUS=two lines");
  notifier.stopping();
  REQUIRE(systemd.receive() == "STOPPING=1");
}

TEST_CASE("the notifier also reaches an abstract NOTIFY_SOCKET", "[notify]") {
  // systemd 252 binds a path, but containers and test rigs often pass '@name'.
  std::string name = "kiln-test-notify-" + std::to_string(::getpid());
  kiln::UniqueFd listener(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  REQUIRE(listener.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length) == 0);
  timeval timeout{2, 0};
  REQUIRE(::setsockopt(listener.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0);
  ::setenv("NOTIFY_SOCKET", ("@" + name).c_str(), 1);

  kilnd::SystemdNotifier notifier;
  notifier.watchdog();
  char buffer[64] = {};
  ssize_t count = ::recv(listener.get(), buffer, sizeof buffer - 1, 0);
  ::unsetenv("NOTIFY_SOCKET");
  REQUIRE(std::string(buffer, count > 0 ? static_cast<std::size_t>(count) : 0) == "WATCHDOG=1");
}

TEST_CASE("without NOTIFY_SOCKET every notification is a quiet no-op", "[notify]") {
  ::unsetenv("NOTIFY_SOCKET");
  kilnd::SystemdNotifier notifier;
  notifier.ready();
  notifier.watchdog();
  notifier.status("nobody listens");
  notifier.stopping();
  SUCCEED("nothing thrown, nothing sent");
}

TEST_CASE("the watchdog interval is half of WATCHDOG_USEC", "[notify]") {
  ::unsetenv("WATCHDOG_PID");
  SECTION("WatchdogSec=30s") {
    ::setenv("WATCHDOG_USEC", "30000000", 1);
    kilnd::SystemdNotifier notifier;
    REQUIRE(notifier.watchdog_interval() == std::chrono::seconds(15));
  }
  SECTION("no watchdog configured") {
    ::unsetenv("WATCHDOG_USEC");
    kilnd::SystemdNotifier notifier;
    REQUIRE_FALSE(notifier.watchdog_interval().has_value());
  }
  SECTION("a watchdog meant for another process (WATCHDOG_PID) is not ours") {
    ::setenv("WATCHDOG_USEC", "30000000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
    kilnd::SystemdNotifier notifier;
    REQUIRE_FALSE(notifier.watchdog_interval().has_value());
  }
  SECTION("a malformed WATCHDOG_USEC is ignored") {
    ::setenv("WATCHDOG_USEC", "soon", 1);
    kilnd::SystemdNotifier notifier;
    REQUIRE_FALSE(notifier.watchdog_interval().has_value());
  }
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
}
