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
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <spdlog/spdlog.h>

#include "kiln/util/error.h"

namespace kiln::rpc {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
namespace fs = std::filesystem;
using local = asio::local::stream_protocol;
using tcp = asio::ip::tcp;

namespace {

// Counts a connection for its lifetime (max_connections).
class ConnectionCount {
 public:
  explicit ConnectionCount(std::atomic<std::size_t>& count) : count_(count) { ++count_; }
  ~ConnectionCount() { --count_; }
  ConnectionCount(const ConnectionCount&) = delete;
  ConnectionCount& operator=(const ConnectionCount&) = delete;

 private:
  std::atomic<std::size_t>& count_;
};

bhttp::response<bhttp::string_body> to_http(const Response& response, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> message{static_cast<bhttp::status>(response.status), version};
  message.set(bhttp::field::server, "kilnd");
  message.set(bhttp::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) message.set(name, value);
  message.body() = response.text_body ? *response.text_body : response.body.dump() + "\n";
  message.keep_alive(keep_alive);
  message.prepare_payload();
  return message;
}

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

struct Server::Impl : std::enable_shared_from_this<Impl> {
  asio::io_context& io;
  asio::thread_pool& blocking_pool;
  Service& service;
  config::RpcSettings rpc;
  config::TlsServerSettings tls;
  std::optional<local::acceptor> unix_acceptor;
  std::optional<tcp::acceptor> tcp_acceptor;
  std::optional<ssl::context> tls_context;
  std::atomic<std::size_t> connections{0};
  bool socket_created = false;

  Impl(asio::io_context& io, asio::thread_pool& pool, Service& service, const config::RpcSettings& rpc,
       const config::TlsServerSettings& tls)
      : io(io), blocking_pool(pool), service(service), rpc(rpc), tls(tls) {}

  void bind_unix_socket();
  void bind_tcp();
  asio::awaitable<void> accept_unix();
  asio::awaitable<void> accept_tcp();
  asio::awaitable<void> unix_session(local::socket socket, Peer peer);
  asio::awaitable<void> tcp_session(tcp::socket socket, Peer peer);
  template <typename Stream>
  asio::awaitable<void> serve(Stream& stream, const Peer& peer);
  bool over_capacity(const Peer& peer);
};

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

bool Server::Impl::over_capacity(const Peer& peer) {
  if (connections.load() < rpc.max_connections) return false;
  spdlog::warn("rpc: refused a connection from {}: {} connections open (max_connections)", peer.describe(),
               connections.load());
  service.metrics().count_http_request(503);
  return true;
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
    if (over_capacity(peer)) continue;  // the socket closes as it goes out of scope
    asio::co_spawn(io, unix_session(std::move(socket), peer), asio::detached);
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
    peer.address = ec ? "tcp" : remote.address().to_string() + ":" + std::to_string(remote.port());
    if (over_capacity(peer)) continue;
    asio::co_spawn(io, tcp_session(std::move(socket), peer), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::unix_session(local::socket socket, Peer peer) {
  auto self = shared_from_this();
  ConnectionCount count(connections);
  beast::basic_stream<local> stream(std::move(socket));
  try {
    co_await serve(stream, peer);
  } catch (const std::exception& failure) {
    spdlog::warn("rpc: connection from {} ended: {}", peer.describe(), failure.what());
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(local::socket::shutdown_both, ignored);
}

asio::awaitable<void> Server::Impl::tcp_session(tcp::socket socket, Peer peer) {
  auto self = shared_from_this();
  ConnectionCount count(connections);
  try {
    if (tls_context) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls_context);
      beast::get_lowest_layer(stream).expires_after(rpc.request_timeout);
      boost::system::error_code ec;
      co_await stream.async_handshake(ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        spdlog::warn("rpc: TLS handshake with {} refused: {}", peer.describe(), ec.message());
        co_return;
      }
      co_await serve(stream, peer);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await serve(stream, peer);
      boost::system::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
  } catch (const std::exception& failure) {
    spdlog::warn("rpc: connection from {} ended: {}", peer.describe(), failure.what());
  }
}

template <typename Stream>
asio::awaitable<void> Server::Impl::serve(Stream& stream, const Peer& peer) {
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(rpc.max_header_bytes));
    parser.body_limit(rpc.max_body_bytes);
    // The whole request must arrive within the timeout, however it trickles in.
    beast::get_lowest_layer(stream).expires_after(rpc.request_timeout);
    boost::system::error_code ec;
    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::end_of_stream) co_return;
    if (ec) {
      std::optional<Response> refusal;
      if (ec == bhttp::error::header_limit) {
        refusal = error_response(431, ErrorCode::kInvalidArgument,
                                 "request headers exceed " + std::to_string(rpc.max_header_bytes) + " bytes");
      } else if (ec == bhttp::error::body_limit) {
        refusal = error_response(413, ErrorCode::kInvalidArgument,
                                 "request body exceeds " + std::to_string(rpc.max_body_bytes) + " bytes");
      } else if (ec == beast::error::timeout) {
        spdlog::warn("rpc: {} sent no whole request within {} s; connection closed", peer.describe(),
                     rpc.request_timeout.count());
        co_return;
      } else if (ec != asio::error::eof && ec != asio::error::connection_reset && buffer.size() > 0) {
        refusal = error_response(400, ErrorCode::kInvalidArgument, "malformed HTTP request: " + ec.message());
      }
      if (refusal) {
        service.metrics().count_http_request(refusal->status);
        spdlog::warn("rpc: {} from {}", refusal->body["error"]["message"].get<std::string>(), peer.describe());
        auto answer = to_http(*refusal, 11, false);
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
        co_await bhttp::async_write(stream, answer, asio::redirect_error(asio::use_awaitable, ec));
      }
      co_return;
    }
    auto& message = parser.get();
    auto request = std::make_shared<Request>(Request{std::string(message.method_string()),
                                                     std::string(message.target()), std::move(message.body()), peer});
    bool keep_alive = message.keep_alive();
    unsigned version = message.version();
    beast::get_lowest_layer(stream).expires_never();
    auto executor = co_await asio::this_coro::executor;
    Service* handler = &service;
    auto work = [handler, request] { return handler->handle(*request); };
    Response response = co_await on_blocking_pool(blocking_pool, executor, std::move(work));
    auto answer = to_http(response, version, keep_alive);
    beast::get_lowest_layer(stream).expires_after(rpc.request_timeout);
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
