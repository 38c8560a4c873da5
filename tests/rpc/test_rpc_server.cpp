// The HTTP transport in-process on a scratch Unix socket: limits answer 413
// and 431, a trickling client is cut at the request timeout without holding
// anyone else up, connections beyond the cap are refused, a stale socket is
// replaced and a live one is not.
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "assertions.h"
#include "kiln/rpc/agent_client.h"
#include "kiln/rpc/server.h"
#include "kiln/rpc/service.h"
#include "raw_connection.h"
#include "scratch.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// A Service and Server on a scratch socket, served by a thread.
struct RunningServer {
  kiln::test::ScratchDir scratch;
  kiln::config::Settings settings;
  std::unique_ptr<kiln::rpc::Service> service;
  boost::asio::io_context io;
  boost::asio::thread_pool blocking{2};
  std::unique_ptr<kiln::rpc::Server> server;
  std::thread loop;

  explicit RunningServer(std::function<void(kiln::config::Settings&)> adjust = nullptr) {
    settings.instances_path = scratch / "instances";
    settings.libvirt_uri = "test:///default";
    settings.glance_api_servers = {kiln::http::parse_url("http://127.0.0.1:1")};
    settings.rpc.unix_socket = scratch / "run" / "kiln.sock";
    settings.rpc.socket_mode = 0600;
    settings.rpc.max_body_bytes = 4096;
    settings.rpc.max_header_bytes = 2048;
    settings.rpc.request_timeout = 2s;
    settings.rpc.max_connections = 8;
    if (adjust) adjust(settings);
    service = std::make_unique<kiln::rpc::Service>(settings);
    server = std::make_unique<kiln::rpc::Server>(io, blocking, *service, settings.rpc, settings.tls);
    server->start();
    loop = std::thread([this] { io.run(); });
  }
  ~RunningServer() {
    boost::asio::post(io, [this] { server->stop_accepting(); io.stop(); });
    loop.join();
    blocking.join();
  }
  kiln::rpc::AgentClient client() const { return kiln::rpc::AgentClient(settings.rpc.unix_socket, 5s); }
};

}  // namespace

TEST_CASE("the socket is created with the configured mode and answers health checks") {
  RunningServer running;
  struct stat info {};
  REQUIRE(::stat(running.settings.rpc.unix_socket.c_str(), &info) == 0);
  REQUIRE(S_ISSOCK(info.st_mode));
  REQUIRE((info.st_mode & 0777) == 0600);
  auto reply = running.client().call("GET", "/healthz");
  REQUIRE(reply.status == 200);
  REQUIRE(reply.body["status"] == "ok");
}

TEST_CASE("a body above max_body_bytes gets 413 and headers above max_header_bytes 431") {
  RunningServer running;
  auto big = running.client().call_raw("POST", "/v1/instances", "{\"pad\": \"" + std::string(8192, 'x') + "\"}");
  REQUIRE(big.status == 413);
  REQUIRE(big.body["error"]["code"] == "invalid_argument");

  kiln::test::RawConnection connection(running.settings.rpc.unix_socket);
  connection.send("GET /healthz HTTP/1.1\r\nHost: k\r\nX-Pad: " + std::string(4096, 'y') + "\r\n\r\n");
  auto answer = connection.read_until_closed(5s);
  REQUIRE(answer.rfind("HTTP/1.1 431", 0) == 0);

  kiln::test::RawConnection garbage(running.settings.rpc.unix_socket);
  garbage.send("NOT HTTP AT ALL\r\n\r\n");
  REQUIRE(garbage.read_until_closed(5s).rfind("HTTP/1.1 400", 0) == 0);
}

TEST_CASE("a client trickling a request byte by byte does not stop others being served, and is cut at the timeout") {
  RunningServer running;
  kiln::test::RawConnection trickler(running.settings.rpc.unix_socket);
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    std::string request = "POST /v1/instances HTTP/1.1\r\nHost: k\r\nContent-Length: 100000\r\n\r\n";
    for (char c : request + std::string(100000, ' ')) {
      if (stop || !trickler.send(std::string(1, c))) return;
      std::this_thread::sleep_for(50ms);
    }
  });
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    auto before = std::chrono::steady_clock::now();
    REQUIRE(running.client().call("GET", "/healthz").status == 200);
    REQUIRE(std::chrono::steady_clock::now() - before < 500ms);
  }
  REQUIRE(std::chrono::steady_clock::now() - started < 2s);
  // request_timeout is 2 s: the trickler is cut then, well before it finishes.
  REQUIRE(trickler.closed_within(5s));
  stop = true;
  trickle.join();
  REQUIRE(std::chrono::steady_clock::now() - started < 6s);
}

TEST_CASE("beyond max_connections only /healthz is answered, from a reserved slot, and others are served when slots free") {
  RunningServer running([](kiln::config::Settings& s) {
    s.rpc.max_connections = 3;
    s.rpc.max_connections_per_peer = 3;
  });
  std::vector<std::unique_ptr<kiln::test::RawConnection>> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(std::make_unique<kiln::test::RawConnection>(running.settings.rpc.unix_socket));
  REQUIRE(running.client().call("GET", "/healthz").status == 200);
  auto refused = running.client().call("GET", "/v1/instances");
  REQUIRE(refused.status == 503);
  REQUIRE(refused.body["error"]["code"] == "overloaded");
  idle.clear();
  for (int i = 0; i < 50 && running.server->open_connections() > 0; ++i) std::this_thread::sleep_for(100ms);
  REQUIRE(running.client().call("GET", "/v1/instances").status == 200);
}

TEST_CASE("one peer holds at most its share of max_connections, half by default") {
  RunningServer running;  // max_connections 8: a share of 4
  std::vector<std::unique_ptr<kiln::test::RawConnection>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(std::make_unique<kiln::test::RawConnection>(running.settings.rpc.unix_socket));
  // The fifth connection of this uid has a reserved slot: /healthz only.
  REQUIRE(running.client().call("GET", "/healthz").status == 200);
  auto refused = running.client().call("GET", "/v1/instances");
  REQUIRE(refused.status == 503);
  REQUIRE(refused.body["error"]["message"].get<std::string>().find("its share of 8") != std::string::npos);
}

TEST_CASE("a stale socket file is replaced, but one an agent answers on is not") {
  RunningServer first;
  kiln::config::Settings second = first.settings;
  kiln::rpc::Service service(second);
  boost::asio::io_context io;
  boost::asio::thread_pool pool{1};
  kiln::rpc::Server server(io, pool, service, second.rpc, second.tls);
  REQUIRE_KILN_ERROR_MENTIONS(server.start(), kiln::ErrorCode::kAlreadyRunning, "another agent answers");
  pool.join();

  // A socket file nobody listens on (an agent killed with SIGKILL leaves one).
  kiln::test::ScratchDir scratch;
  kiln::config::Settings third = first.settings;
  third.rpc.unix_socket = scratch / "stale.sock";
  {
    boost::asio::io_context other;
    boost::asio::local::stream_protocol::acceptor stale(other, boost::asio::local::stream_protocol::endpoint(
                                                                   third.rpc.unix_socket.string()));
  }
  REQUIRE(fs::exists(third.rpc.unix_socket));
  boost::asio::io_context io3;
  boost::asio::thread_pool pool3{1};
  kiln::rpc::Server replacing(io3, pool3, service, third.rpc, third.tls);
  REQUIRE_NOTHROW(replacing.start());
  replacing.stop_accepting();
  REQUIRE(!fs::exists(third.rpc.unix_socket));
  pool3.join();
}
