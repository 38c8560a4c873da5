// kilnd's socket under abuse, as an attacker on the host would try it: a
// real kilnd (libvirt test:///default, no Glance needed) and raw bytes on its
// Unix socket. Many idle or trickling connections from one uid lock out
// neither another uid nor /healthz; every refusal is an HTTP answer with the
// JSON error body (bytes that are not UTF-8 escaped, Transfer-Encoding other
// than "chunked" 501, oversized chunk extensions 431); idle connections are
// cut at header_timeout while a request whose header is in gets
// request_timeout. A second uid comes from a forked child that drops to
// 65534 (nobody) before it connects, so these tests need root.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "kilnd_process.h"
#include "raw_connection.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kOtherUid = 65534;

// A kilnd on a scratch socket that any uid may connect to, with `extra`
// lines in its [rpc] section.
struct AbusedAgent {
  kiln::test::ScratchDir scratch;
  fs::path socket = scratch / "kiln.sock";
  fs::path config;
  std::unique_ptr<kiln::test::KilndProcess> kilnd;

  explicit AbusedAgent(const std::string& rpc_extra = "") {
    // The other uid must reach the socket: the scratch directory is 0711,
    // and the socket mode is set here (kilnd's default is 0660).
    config = kiln::test::write_kilnd_config(scratch.path(), scratch / "instances", "http://127.0.0.1:1",
                                            "test:///default", socket, "socket_mode = 0666\n" + rpc_extra);
    kilnd = std::make_unique<kiln::test::KilndProcess>(config, socket);
    REQUIRE(kilnd->wait_ready());
  }
  ~AbusedAgent() {
    if (kilnd) kilnd->stop(SIGKILL);
  }
  kiln::rpc::AgentClient client() const { return kiln::rpc::AgentClient(socket, 10s); }
};

// Sends `request` on a fresh connection and returns everything kilnd sends
// back before it closes.
std::string round_trip(const fs::path& socket, const std::string& request) {
  kiln::test::RawConnection connection(socket);
  connection.send(request);  // may fail half-way once kilnd has answered and closed
  return connection.read_until_closed(20s);
}

// The status and JSON body of a raw HTTP answer (kilnd never chunks its answers).
struct RawAnswer {
  int status = 0;
  json body;
};

RawAnswer parse_answer(const std::string& text) {
  RawAnswer answer;
  if (text.rfind("HTTP/1.1 ", 0) == 0) answer.status = std::stoi(text.substr(9, 3));
  auto end_of_header = text.find("\r\n\r\n");
  if (end_of_header != std::string::npos) {
    answer.body = json::parse(text.substr(end_of_header + 4), nullptr, false);
  }
  return answer;
}

int connect_to(const fs::path& socket) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket.c_str(), sizeof address.sun_path - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return -1;
  return fd;
}

bool drop_to(uid_t uid) {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0;
}

// A child process of uid 65534 holding `count` connections to kilnd, each
// with half a request header sent (a trickler that stopped). It counts the
// connections kilnd answered with 503 and closed, waiting up to 20 s for
// `expected_refusals` of them, and keeps the rest open until destroyed.
class ForeignConnections {
 public:
  ForeignConnections(const fs::path& socket, int count, int expected_refusals) {
    int ready[2], done[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(done, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(done[1]);
      int report[3] = {0, 0, 0};  // connected, answered 503, closed without an answer
      if (!drop_to(kOtherUid)) ::_exit(2);
      std::vector<pollfd> fds;
      for (int i = 0; i < count; ++i) {
        int fd = connect_to(socket);
        if (fd < 0) break;
        const char half[] = "GET /v1/instances HTTP/1.1\r\nHost: k\r\n";
        (void)::send(fd, half, sizeof half - 1, MSG_NOSIGNAL);
        fds.push_back({fd, POLLIN, 0});
        ++report[0];
      }
      std::vector<bool> finished(fds.size(), false);
      auto deadline = std::chrono::steady_clock::now() + 20s;
      while (report[1] + report[2] < expected_refusals && std::chrono::steady_clock::now() < deadline) {
        for (auto& item : fds) item.revents = 0;
        if (::poll(fds.data(), fds.size(), 200) <= 0) continue;
        for (std::size_t i = 0; i < fds.size(); ++i) {
          if (finished[i] || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
          char buffer[4096];
          ssize_t n = ::recv(fds[i].fd, buffer, sizeof buffer, MSG_DONTWAIT);
          finished[i] = true;
          fds[i].events = 0;
          if (n > 12 && std::memcmp(buffer, "HTTP/1.1 503", 12) == 0) {
            ++report[1];
          } else {
            ++report[2];
          }
        }
      }
      (void)::write(ready[1], report, sizeof report);
      char byte;
      (void)::read(done[0], &byte, 1);  // until the parent closes its end
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(done[0]);
    done_ = done[1];
    ready_ = ::read(ready[0], report_, sizeof report_) == static_cast<ssize_t>(sizeof report_);
    ::close(ready[0]);
  }
  ~ForeignConnections() {
    ::close(done_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  bool ready() const { return ready_; }
  int connected() const { return report_[0]; }
  int answered_503() const { return report_[1]; }
  int closed_silently() const { return report_[2]; }

 private:
  pid_t pid_ = -1;
  int done_ = -1;
  bool ready_ = false;
  int report_[3] = {0, 0, 0};
};

// Runs one raw request as uid 65534 and returns the answer's status (0: none).
int status_as_other_uid(const fs::path& socket, const std::string& request) {
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    int status = 0;
    if (drop_to(kOtherUid)) {
      try {
        status = parse_answer(round_trip(socket, request)).status;
      } catch (...) {
      }
    }
    (void)::write(pipe_fds[1], &status, sizeof status);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  int status = 0;
  if (::read(pipe_fds[0], &status, sizeof status) != sizeof status) status = -1;
  ::close(pipe_fds[0]);
  int ignored = 0;
  ::waitpid(pid, &ignored, 0);
  return status;
}

const std::string kHalfRequest = "GET /v1/instances HTTP/1.1\r\nHost: k\r\n";

}  // namespace

TEST_CASE("130 stalled connections from one uid lock out neither another uid nor /healthz") {
  REQUIRE(::geteuid() == 0);
  // Defaults: max_connections 128, a share of 64 per uid; header_timeout is
  // raised so that no stalled connection is cut while the test looks.
  AbusedAgent agent("header_timeout_seconds = 120\nrequest_timeout_seconds = 120\n");
  // 64 in its share and 1 in a reserved slot stay open; the other 65 get 503.
  ForeignConnections foreign(agent.socket, 130, 65);
  REQUIRE(foreign.ready());
  REQUIRE(foreign.connected() == 130);
  CHECK(foreign.answered_503() == 65);
  CHECK(foreign.closed_silently() == 0);

  auto client = agent.client();
  REQUIRE(client.call("GET", "/healthz").status == 200);
  auto listed = client.call("GET", "/v1/instances");
  INFO(listed.body.dump());
  REQUIRE(listed.status == 200);
  REQUIRE(listed.body["instances"].is_array());
  // Root may hold (nearly) its own share while the other uid holds its; one
  // slot is left for the client, whose previous connection kilnd may not
  // have seen closed yet.
  std::vector<std::unique_ptr<kiln::test::RawConnection>> mine;
  for (int i = 0; i < 62; ++i) {
    mine.push_back(std::make_unique<kiln::test::RawConnection>(agent.socket));
    mine.back()->send(kHalfRequest);
  }
  REQUIRE(client.call("GET", "/v1/cache").status == 200);
  REQUIRE(agent.kilnd->log().find("its share of 128") != std::string::npos);
}

TEST_CASE("/healthz is answered from a reserved slot when every connection slot is held, other routes get 503") {
  REQUIRE(::geteuid() == 0);
  AbusedAgent agent(
      "max_connections = 4\nmax_connections_per_peer = 4\nheader_timeout_seconds = 120\nrequest_timeout_seconds = "
      "120\n");
  std::vector<std::unique_ptr<kiln::test::RawConnection>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<kiln::test::RawConnection>(agent.socket));
    held.back()->send(kHalfRequest);
  }
  auto health = parse_answer(round_trip(agent.socket, "GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n"));
  REQUIRE(health.status == 200);
  REQUIRE(health.body["status"] == "ok");

  auto refused = parse_answer(round_trip(agent.socket, "GET /v1/instances HTTP/1.1\r\nHost: k\r\n\r\n"));
  INFO(refused.body.dump());
  REQUIRE(refused.status == 503);
  REQUIRE(refused.body["error"]["code"] == "overloaded");
  REQUIRE(refused.body["error"]["message"].get<std::string>().find("all 4 connections are in use") !=
          std::string::npos);

  // One reserved slot per uid: root holding one gets 503 at once for the
  // next, but another uid still has its own and is answered.
  kiln::test::RawConnection reserve_holder(agent.socket);
  reserve_holder.send(kHalfRequest);
  auto crowded = parse_answer(round_trip(agent.socket, "GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n"));
  REQUIRE(crowded.status == 503);
  REQUIRE(crowded.body["error"]["code"] == "overloaded");
  REQUIRE(status_as_other_uid(agent.socket, "GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n") == 200);

  // Slots given back are served again.
  held.clear();
  auto client = agent.client();
  for (int i = 0; i < 50; ++i) {
    auto reply = client.call("GET", "/v1/instances");
    if (reply.status == 200) break;
    std::this_thread::sleep_for(100ms);  // kilnd notices the closed connections as it reads them
  }
  REQUIRE(client.call("GET", "/v1/instances").status == 200);
}

TEST_CASE("bytes that are not UTF-8 in a body or a path get 400 with the JSON error body, the byte escaped") {
  AbusedAgent agent;
  std::string body = "{\"dry_run\": \"\xff\xfe\"}";
  auto in_body = parse_answer(round_trip(agent.socket, "POST /v1/cache/prune HTTP/1.1\r\nHost: k\r\nContent-Length: " +
                                                         std::to_string(body.size()) + "\r\n\r\n" + body));
  INFO(in_body.body.dump());
  REQUIRE(in_body.status == 400);
  REQUIRE(in_body.body["error"]["code"] == "invalid_argument");
  REQUIRE(in_body.body["error"]["message"].get<std::string>().find("\\xff") != std::string::npos);

  auto in_path = parse_answer(round_trip(agent.socket, "GET /v1/instances/\xc3\x28-\xff HTTP/1.1\r\nHost: k\r\n\r\n"));
  INFO(in_path.body.dump());
  REQUIRE(in_path.status == 400);
  REQUIRE(in_path.body["error"]["code"] == "invalid_argument");
  auto message = in_path.body["error"]["message"].get<std::string>();
  REQUIRE(message.find("/v1/instances/\\xc3(-\\xff") != std::string::npos);

  // An overlong encoding of '/' and a UTF-16 surrogate are not UTF-8 either.
  REQUIRE(parse_answer(round_trip(agent.socket, "GET /v1/\xc0\xafhealthz HTTP/1.1\r\nHost: k\r\n\r\n")).status == 400);
  REQUIRE(parse_answer(round_trip(agent.socket, "GET /v1/\xed\xa0\x80 HTTP/1.1\r\nHost: k\r\n\r\n")).status == 400);
  // Valid UTF-8 that names nothing is still a plain 404.
  REQUIRE(parse_answer(round_trip(agent.socket, "GET /v1/caf\xc3\xa9 HTTP/1.1\r\nHost: k\r\n\r\n")).status == 404);
  REQUIRE(agent.client().call("GET", "/healthz").status == 200);
}

TEST_CASE("a Transfer-Encoding other than exactly chunked gets 501, and chunked alone is served") {
  AbusedAgent agent;
  const std::string head = "POST /v1/cache/prune HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\n";
  const std::string chunks = "11\r\n{\"dry_run\": true}\r\n0\r\n\r\n";
  for (std::string coding : {"gzip, chunked", "chunked, chunked", "gzip", "identity", "deflate,chunked"}) {
    INFO(coding);
    auto answer = parse_answer(round_trip(agent.socket, head + "Transfer-Encoding: " + coding + "\r\n\r\n" + chunks));
    REQUIRE(answer.status == 501);
    REQUIRE(answer.body["error"]["code"] == "invalid_argument");
  }
  // Two fields, the last one chunked: the same coding list as "gzip, chunked".
  auto split = parse_answer(
      round_trip(agent.socket, head + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks));
  REQUIRE(split.status == 501);
  auto plain = parse_answer(round_trip(agent.socket, head + "Transfer-Encoding: chunked\r\n\r\n" + chunks));
  INFO(plain.body.dump());
  REQUIRE(plain.status == 200);
  REQUIRE(plain.body["dry_run"] == true);
}

TEST_CASE("chunk extensions count against the header limit: a 100 KiB extension gets 431, small ones are served") {
  AbusedAgent agent;  // max_header_bytes 16384, max_body_bytes 1 MiB: 100 KiB is within both on its own
  const std::string head =
      "POST /v1/cache/prune HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  auto huge = parse_answer(round_trip(agent.socket, head + "11;x=" + std::string(100 * 1024, 'a') +
                                                      "\r\n{\"dry_run\": true}\r\n0\r\n\r\n"));
  INFO(huge.body.dump());
  REQUIRE(huge.status == 431);
  REQUIRE(huge.body["error"]["code"] == "invalid_argument");

  // Many small extensions add up: 17 chunks of one byte with 1 KiB each.
  std::string many;
  for (char c : std::string("{\"dry_run\": true}")) many += "1;x=" + std::string(1024, 'b') + "\r\n" + c + "\r\n";
  auto summed = parse_answer(round_trip(agent.socket, head + many + "0\r\n\r\n"));
  REQUIRE(summed.status == 431);

  auto small = parse_answer(round_trip(agent.socket, head + "11;name=value\r\n{\"dry_run\": true}\r\n0\r\n\r\n"));
  INFO(small.body.dump());
  REQUIRE(small.status == 200);
  REQUIRE(agent.client().call("GET", "/healthz").status == 200);
}

TEST_CASE("an idle or trickling connection is cut at header_timeout, a request whose header is in gets request_timeout") {
  // Budget: about 4 s (a body trickled over 3 s); the bounds waited on are 30 s.
  AbusedAgent agent("header_timeout_seconds = 1\nrequest_timeout_seconds = 60\n");
  kiln::test::RawConnection idle(agent.socket);
  kiln::test::RawConnection trickling(agent.socket);
  trickling.send("GET /healthz HTTP/1.1\r\nHo");
  kiln::test::RawConnection active(agent.socket);
  const std::string body = "{\"dry_run\": true}";
  active.send("POST /v1/cache/prune HTTP/1.1\r\nHost: k\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n");
  // Silent for an idle connection: an answer could cross a request sent meanwhile.
  REQUIRE(idle.read_until_closed(30s).empty());
  auto cut = parse_answer(trickling.read_until_closed(30s));
  REQUIRE(cut.status == 408);
  REQUIRE(cut.body["error"]["code"] == "invalid_argument");
  // Three times header_timeout, a byte at a time: still served.
  for (char c : body) {
    REQUIRE(active.send(std::string(1, c)));
    std::this_thread::sleep_for(3000ms / body.size());
  }
  auto served = parse_answer(active.read_until_closed(30s).substr(0, 4096));
  // keep-alive: the answer arrives, then kilnd waits (header_timeout) for another request.
  INFO(served.body.dump());
  REQUIRE(served.status == 200);
  REQUIRE(served.body["dry_run"] == true);
}
