#include "kiln/rpc/server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <type_traits>
#include <sstream>
#include <spdlog/spdlog.h>

#include "kiln/util/error.h"
#include "request_reader.h"

namespace kiln::rpc {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
namespace fs = std::filesystem;
using local = asio::local::stream_protocol;
using tcp = asio::ip::tcp;

namespace {

// Cancels the reads on a stream at a deadline without closing it: Beast's
// own timeout closes the socket, after which a 408 could not be sent. The
// timer's handler may run after the session has gone (a cancel races with
// the expiry), so it reaches the stream only while `alive`.
template <typename Lowest>
class ReadDeadline {
 public:
  ReadDeadline(const asio::any_io_executor& executor, Lowest& lowest)
      : timer_(executor), state_(std::make_shared<State>()), lowest_(lowest) {}
  ~ReadDeadline() {
    state_->alive = false;
    timer_.cancel();
  }
  ReadDeadline(const ReadDeadline&) = delete;
  ReadDeadline& operator=(const ReadDeadline&) = delete;

  void arm(std::chrono::steady_clock::time_point at) {
    state_->expired = false;
    auto generation = ++state_->generation;
    timer_.expires_at(at);
    timer_.async_wait([state = state_, generation, lowest = &lowest_](const boost::system::error_code& ec) {
      if (ec || !state->alive || state->generation != generation) return;
      state->expired = true;
      lowest->cancel();
    });
  }
  void disarm() {
    ++state_->generation;
    timer_.cancel();
  }
  bool expired() const { return state_->expired; }

 private:
  struct State {
    bool alive = true;
    bool expired = false;
    std::uint64_t generation = 0;
  };
  asio::steady_timer timer_;
  std::shared_ptr<State> state_;
  Lowest& lowest_;
};

// Runs `function` on the blocking pool and resumes the awaiting coroutine on
// `executor` with the result, so the event loop never waits on disk or
// libvirt. Not a coroutine itself: g++ 12 mishandles lambdas moved into
// coroutine parameters, so the work travels only through async_initiate.
template <typename Function>
asio::awaitable<Response> on_blocking_pool(asio::thread_pool& pool, asio::any_io_executor executor, Function function) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(Response)>(
      [&pool, executor, function = std::move(function)](auto handler) mutable {
        asio::post(pool, [handler = std::move(handler), executor, function = std::move(function)]() mutable {
          Response response = function();
          asio::post(executor, [handler = std::move(handler), response = std::move(response)]() mutable {
            handler(std::move(response));
          });
        });
      },
      asio::use_awaitable);
}

// A long poll's wait, holding no thread: the wake-up (called on whichever
// thread finishes what is awaited) moves a timer's expiry to the past on the
// event loop, which ends a wait in progress and any wait begun after it.
// REQUIRES: the event loop runs on one thread (kilnd's does).
asio::awaitable<Response> after_long_poll(LongPoll poll) {
  auto executor = co_await asio::this_coro::executor;
  auto timer = std::make_shared<asio::steady_timer>(executor, poll.up_to);
  std::weak_ptr<asio::steady_timer> weak = timer;
  auto subscription = poll.subscribe([weak, executor] {
    asio::post(executor, [weak] {
      if (auto woken = weak.lock()) woken->expires_at(asio::steady_timer::time_point::min());
    });
  });
  if (subscription) {  // null: it had happened already
    boost::system::error_code ignored;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ignored));  // woken or timed out
  }
  co_return poll.answer();
}

// Whether something answers on the Unix socket at `path`.
bool socket_answers(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_io_error("socket", errno);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  int result = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  int error = errno;
  ::close(fd);
  if (result == 0) return true;
  if (error == ECONNREFUSED || error == ENOENT) return false;
  throw_io_error("connect to " + path.string(), error);
}

}  // namespace

enum class SlotKind { kRegular, kReserved };

struct Server::Impl : std::enable_shared_from_this<Impl> {
  asio::io_context& io;
  asio::thread_pool& blocking_pool;
  Service& service;
  config::RpcSettings rpc;
  config::TlsServerSettings tls;
  std::optional<local::acceptor> unix_acceptor;
  std::optional<tcp::acceptor> tcp_acceptor;
  std::optional<ssl::context> tls_context;
  bool socket_created = false;
  // Every open connection, reserved ones included (open_connections()).
  std::atomic<std::size_t> connections{0};
  // The connection table; touched only on the io_context's thread.
  std::size_t regular_in_use = 0;
  std::size_t reserved_in_use = 0;
  std::map<std::string, std::size_t> regular_by_peer;   // no zero entries
  std::map<std::string, std::size_t> reserved_by_peer;  // no zero entries

  Impl(asio::io_context& io, asio::thread_pool& pool, Service& service, const config::RpcSettings& rpc,
       const config::TlsServerSettings& tls)
      : io(io), blocking_pool(pool), service(service), rpc(rpc), tls(tls) {}

  // Whether a new connection from `key` gets a regular slot, a reserved one
  // (GET /healthz only; `reason` says why no regular one) or none; takes the slot.
  std::optional<SlotKind> admit(const std::string& key, const Peer& peer, std::string& reason);
  void release(SlotKind kind, const std::string& key);
  // A connection's slot in the table, given back when its session ends.
  class Slot {
   public:
    Slot(Impl& impl, SlotKind kind, std::string key) : impl_(impl), kind_(kind), key_(std::move(key)) {}
    ~Slot() { impl_.release(kind_, key_); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    Impl& impl_;
    SlotKind kind_;
    std::string key_;
  };
  std::size_t peer_share() const;

  void bind_unix_socket();
  void bind_tcp();
  asio::awaitable<void> accept_unix();
  asio::awaitable<void> accept_tcp();
  asio::awaitable<void> unix_session(local::socket socket, Peer peer, SlotKind kind, std::string key,
                                     std::string reason);
  asio::awaitable<void> tcp_session(tcp::socket socket, Peer peer, SlotKind kind, std::string key,
                                    std::string reason);
  // Serves requests until the peer leaves, an error or a refusal; in a
  // reserved slot (`reserved_reason` set) one request: /healthz, or 503.
  template <typename Stream>
  asio::awaitable<void> serve(Stream& stream, const Peer& peer, const std::optional<std::string>& reserved_reason);
  template <typename Stream>
  asio::awaitable<void> answer_refusal(Stream& stream, const Peer& peer, const Response& refusal);
};

namespace {

// The peer a share is counted for: the uid on the Unix socket, the address
// (without the port) on TCP.
std::string peer_key(const Peer& peer, const std::string& address) {
  if (peer.uid) return "uid " + std::to_string(*peer.uid);
  return address;
}

// Answers 503 without reading the request and closes: for a connection that
// gets no slot at all, so it costs no coroutine and no timer. The socket is
// fresh, its send buffer empty; a peer that reads nothing loses nothing
// but the answer.
template <typename Socket>
void refuse_at_once(Socket& socket, const Response& refusal) {
  std::ostringstream text;
  text << detail::to_http(refusal, 11, false);
  std::string bytes = text.str();
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  (void)::send(socket.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  socket.shutdown(Socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace

std::size_t Server::Impl::peer_share() const {
  std::size_t total = rpc.max_connections;
  if (rpc.max_connections_per_peer > 0) return std::min<std::size_t>(rpc.max_connections_per_peer, total);
  return std::max<std::size_t>(1, total / 2);
}

std::optional<SlotKind> Server::Impl::admit(const std::string& key, const Peer& peer, std::string& reason) {
  std::size_t held = regular_by_peer.count(key) ? regular_by_peer[key] : 0;
  std::size_t share = peer_share();
  if (regular_in_use < rpc.max_connections && held < share) {
    ++regular_in_use;
    ++regular_by_peer[key];
    ++connections;
    return SlotKind::kRegular;
  }
  reason = regular_in_use < rpc.max_connections ? peer.describe() + " holds " + std::to_string(held) + " connections, its share of " +
                               std::to_string(rpc.max_connections) + " (max_connections_per_peer)"
                         : "all " + std::to_string(rpc.max_connections) + " connections are in use (max_connections)";
  // One reserved slot per peer, so that a peer looping on /healthz cannot
  // take them all.
  if (reserved_in_use < kReservedSlots && !reserved_by_peer.count(key)) {
    ++reserved_in_use;
    ++reserved_by_peer[key];
    ++connections;
    return SlotKind::kReserved;
  }
  return std::nullopt;
}

void Server::Impl::release(SlotKind kind, const std::string& key) {
  auto& by_peer = kind == SlotKind::kRegular ? regular_by_peer : reserved_by_peer;
  auto& in_use = kind == SlotKind::kRegular ? regular_in_use : reserved_in_use;
  --in_use;
  --connections;
  auto entry = by_peer.find(key);
  if (entry != by_peer.end() && --entry->second == 0) by_peer.erase(entry);
}

void Server::Impl::bind_unix_socket() {
  const fs::path& path = rpc.unix_socket;
  struct stat status {};
  if (::lstat(path.c_str(), &status) == 0) {
    if (!S_ISSOCK(status.st_mode)) {
      throw Error(ErrorCode::kIoError, path.string() + " exists and is not a socket; refusing to replace it");
    }
    if (socket_answers(path)) {
      throw Error(ErrorCode::kAlreadyRunning, "another agent answers on " + path.string());
    }
    // Nobody listens: a socket left by an agent that died.
    ::unlink(path.c_str());
  }
  std::error_code error;
  fs::create_directories(path.parent_path(), error);
  unix_acceptor.emplace(io);
  boost::system::error_code ec;
  unix_acceptor->open(local(), ec);
  if (!ec) unix_acceptor->bind(local::endpoint(path.string()), ec);
  if (!ec) unix_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw Error(ErrorCode::kIoError, "cannot listen on " + path.string() + ": " + ec.message());
  socket_created = true;
  if (!rpc.socket_group.empty()) {
    struct group* group = ::getgrnam(rpc.socket_group.c_str());
    if (!group) throw Error(ErrorCode::kConfigInvalid, "[rpc] socket_group '" + rpc.socket_group + "' does not exist");
    if (::chown(path.c_str(), static_cast<uid_t>(-1), group->gr_gid) != 0) throw_io_error("chown " + path.string(), errno);
  }
  if (::chmod(path.c_str(), rpc.socket_mode) != 0) throw_io_error("chmod " + path.string(), errno);
}

void Server::Impl::bind_tcp() {
  if (!rpc.listen) return;
  if (!rpc.plain_tcp) {
    try {
      tls_context.emplace(ssl::context::tls_server);
      tls_context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                               ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls_context->use_certificate_chain_file(tls.cert_file);
      tls_context->use_private_key_file(tls.key_file, ssl::context::pem);
      tls_context->load_verify_file(tls.ca_file);
      // Mutual TLS: a client without a certificate chaining to ca_file is refused.
      tls_context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    } catch (const boost::system::system_error& failure) {
      throw Error(ErrorCode::kConfigInvalid, std::string("[tls] files unusable: ") + failure.what());
    }
  }
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(rpc.listen->host, std::to_string(rpc.listen->port), ec);
  if (ec || endpoints.empty()) {
    throw Error(ErrorCode::kIoError, "cannot resolve [rpc] listen host '" + rpc.listen->host + "'");
  }
  tcp::endpoint endpoint = *endpoints.begin();
  tcp_acceptor.emplace(io);
  tcp_acceptor->open(endpoint.protocol(), ec);
  if (!ec) tcp_acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) tcp_acceptor->bind(endpoint, ec);
  if (!ec) tcp_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error(ec == asio::error::address_in_use ? ErrorCode::kAlreadyRunning : ErrorCode::kIoError,
                "cannot listen on " + rpc.listen->host + ":" + std::to_string(rpc.listen->port) + ": " + ec.message());
  }
}

asio::awaitable<void> Server::Impl::accept_unix() {
  auto self = shared_from_this();
  while (unix_acceptor && unix_acceptor->is_open()) {
    local::socket socket(io);
    boost::system::error_code ec;
    co_await unix_acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !unix_acceptor->is_open()) co_return;
    if (ec) continue;
    Peer peer;
    peer.address = "unix";
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
      peer.uid = credentials.uid;
      peer.pid = credentials.pid;
    }
    std::string key = peer_key(peer, "unix");
    std::string reason;
    auto kind = admit(key, peer, reason);
    if (!kind) {
      spdlog::warn("rpc: refused a connection from {}: {}; reserved slots busy", peer.describe(), reason);
      service.metrics().count_http_request(503);
      refuse_at_once(socket, error_response(503, ErrorCode::kOverloaded, reason));
      continue;
    }
    asio::co_spawn(io, unix_session(std::move(socket), peer, *kind, key, reason), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::accept_tcp() {
  auto self = shared_from_this();
  while (tcp_acceptor && tcp_acceptor->is_open()) {
    tcp::socket socket(io);
    boost::system::error_code ec;
    co_await tcp_acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !tcp_acceptor->is_open()) co_return;
    if (ec) continue;
    Peer peer;
    auto remote = socket.remote_endpoint(ec);
    std::string address = ec ? "tcp" : remote.address().to_string();
    peer.address = ec ? "tcp" : address + ":" + std::to_string(remote.port());
    std::string key = peer_key(peer, address);
    std::string reason;
    auto kind = admit(key, peer, reason);
    if (!kind) {
      spdlog::warn("rpc: refused a connection from {}: {}; reserved slots busy", peer.describe(), reason);
      service.metrics().count_http_request(503);
      // Plain HTTP would be noise inside TLS: a TLS client just sees the close.
      if (tls_context) {
        socket.close(ec);
      } else {
        refuse_at_once(socket, error_response(503, ErrorCode::kOverloaded, reason));
      }
      continue;
    }
    asio::co_spawn(io, tcp_session(std::move(socket), peer, *kind, key, reason), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::unix_session(local::socket socket, Peer peer, SlotKind kind, std::string key,
                                                 std::string reason) {
  auto self = shared_from_this();
  Slot slot(*this, kind, key);
  beast::basic_stream<local> stream(std::move(socket));
  std::optional<std::string> reserved_reason;
  if (kind == SlotKind::kReserved) reserved_reason = reason;
  try {
    co_await serve(stream, peer, reserved_reason);
  } catch (const std::exception& failure) {
    spdlog::warn("rpc: connection from {} ended: {}", peer.describe(), failure.what());
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(local::socket::shutdown_both, ignored);
}

asio::awaitable<void> Server::Impl::tcp_session(tcp::socket socket, Peer peer, SlotKind kind, std::string key,
                                                std::string reason) {
  auto self = shared_from_this();
  Slot slot(*this, kind, key);
  std::optional<std::string> reserved_reason;
  if (kind == SlotKind::kReserved) reserved_reason = reason;
  try {
    if (tls_context) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls_context);
      // A handshake is part of the first request's header time.
      beast::get_lowest_layer(stream).expires_after(std::min(rpc.header_timeout, rpc.request_timeout));
      boost::system::error_code ec;
      co_await stream.async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        spdlog::warn("rpc: TLS handshake with {} refused: {}", peer.describe(), ec.message());
        co_return;
      }
      co_await serve(stream, peer, reserved_reason);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await serve(stream, peer, reserved_reason);
      boost::system::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
  } catch (const std::exception& failure) {
    spdlog::warn("rpc: connection from {} ended: {}", peer.describe(), failure.what());
  }
}

template <typename Stream>
asio::awaitable<void> Server::Impl::answer_refusal(Stream& stream, const Peer& peer, const Response& refusal) {
  service.metrics().count_http_request(refusal.status);
  spdlog::warn("rpc: {} {} to {}", refusal.status, refusal.body["error"]["message"].get<std::string>(),
               peer.describe());
  auto answer = detail::to_http(refusal, 11, false);
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
  boost::system::error_code ignored;
  co_await bhttp::async_write(stream, answer, asio::redirect_error(asio::use_awaitable, ignored));
}

template <typename Stream>
asio::awaitable<void> Server::Impl::serve(Stream& stream, const Peer& peer,
                                          const std::optional<std::string>& reserved_reason) {
  auto& lowest = beast::get_lowest_layer(stream);
  ReadDeadline<std::remove_reference_t<decltype(lowest)>> deadline(co_await asio::this_coro::executor, lowest);
  beast::flat_buffer buffer(detail::read_buffer_limit(rpc));
  for (;;) {
    detail::RequestReader reader(rpc);
    auto& parser = reader.parser();
    // The header block must be in by header_timeout, the whole request by
    // request_timeout, both counted from now, however the bytes trickle in.
    auto started = std::chrono::steady_clock::now();
    lowest.expires_never();
    deadline.arm(started + std::min(rpc.header_timeout, rpc.request_timeout));
    boost::system::error_code ec;
    std::size_t header_bytes =
        co_await bhttp::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    std::optional<Response> refusal;
    if (!ec) refusal = reader.header_read(header_bytes);
    if (!ec && !refusal) {
      deadline.arm(started + rpc.request_timeout);
      co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    }
    deadline.disarm();
    if (ec == asio::error::operation_aborted && deadline.expired()) ec = beast::error::timeout;
    if (ec && !refusal) {
      refusal = reader.refusal_for(ec, parser.got_some() || buffer.size() > 0);
      if (!refusal) {
        if (ec == beast::error::timeout) {
          spdlog::info("rpc: {} sent nothing within {} s; connection closed", peer.describe(),
                       std::min(rpc.header_timeout, rpc.request_timeout).count());
        }
        co_return;
      }
    }
    if (refusal) {
      co_await answer_refusal(stream, peer, *refusal);
      co_return;
    }
    bool keep_alive = parser.get().keep_alive() && !reserved_reason;
    unsigned version = parser.get().version();
    auto request = std::make_shared<Request>(reader.take_request(peer));
    Response response;
    if (reserved_reason) {
      // A reserved slot answers the health check here, on the event loop
      // (it only reads counters), so that it cannot queue behind work.
      std::string path = request->target.substr(0, request->target.find('?'));
      if (request->method == "GET" && path == "/healthz") {
        response = service.handle(*request);
      } else {
        response = error_response(503, ErrorCode::kOverloaded, *reserved_reason + "; retry later");
        response.headers["Retry-After"] = "1";
        service.metrics().count_http_request(503);
        spdlog::warn("rpc: {} {} from {} refused: {}", request->method, escape_invalid_utf8(request->target),
                     peer.describe(), *reserved_reason);
      }
    } else {
      auto executor = co_await asio::this_coro::executor;
      Service* handler = &service;
      auto work = [handler, request] { return handler->handle(*request); };
      response = co_await on_blocking_pool(blocking_pool, executor, std::move(work));
      if (response.long_poll) response = co_await after_long_poll(std::move(*response.long_poll));
    }
    auto answer = detail::to_http(response, version, keep_alive);
    lowest.expires_after(rpc.request_timeout);
    co_await bhttp::async_write(stream, answer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !keep_alive) co_return;
  }
}

Server::Server(asio::io_context& io, asio::thread_pool& blocking_pool, Service& service,
               const config::RpcSettings& rpc, const config::TlsServerSettings& tls)
    : impl_(std::make_shared<Impl>(io, blocking_pool, service, rpc, tls)) {}

Server::~Server() { stop_accepting(); }

void Server::start() {
  impl_->bind_unix_socket();
  impl_->bind_tcp();
  asio::co_spawn(impl_->io, impl_->accept_unix(), asio::detached);
  if (impl_->tcp_acceptor) asio::co_spawn(impl_->io, impl_->accept_tcp(), asio::detached);
  spdlog::info("rpc: listening on {}{}", impl_->rpc.unix_socket.string(),
               impl_->tcp_acceptor ? " and tcp port " + std::to_string(tcp_port()) +
                                         (impl_->tls_context ? " (mutual TLS)" : " (plain, loopback)")
                                   : std::string());
}

void Server::stop_accepting() {
  boost::system::error_code ignored;
  if (impl_->unix_acceptor && impl_->unix_acceptor->is_open()) impl_->unix_acceptor->close(ignored);
  if (impl_->tcp_acceptor && impl_->tcp_acceptor->is_open()) impl_->tcp_acceptor->close(ignored);
  if (impl_->socket_created) {
    ::unlink(impl_->rpc.unix_socket.c_str());
    impl_->socket_created = false;
  }
}

void Server::set_limits(const config::RpcSettings& rpc) {
  impl_->rpc.max_connections = rpc.max_connections;
  impl_->rpc.max_connections_per_peer = rpc.max_connections_per_peer;
  impl_->rpc.header_timeout = rpc.header_timeout;
  impl_->rpc.max_body_bytes = rpc.max_body_bytes;
  impl_->rpc.max_header_bytes = rpc.max_header_bytes;
  impl_->rpc.request_timeout = rpc.request_timeout;
}

unsigned short Server::tcp_port() const {
  if (!impl_->tcp_acceptor || !impl_->tcp_acceptor->is_open()) return 0;
  boost::system::error_code ec;
  auto endpoint = impl_->tcp_acceptor->local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

std::size_t Server::open_connections() const { return impl_->connections.load(); }

}  // namespace kiln::rpc
