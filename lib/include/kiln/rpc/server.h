// kilnd's HTTP/1.1 transport: Boost.Beast on Asio C++20 coroutines, over the
// Unix socket and optionally TCP (mutual TLS, or plain on loopback).
//
// One coroutine per connection reads a request, hands it to the Service on
// a small blocking pool (the Service touches disk and libvirt; the event
// loop never does) and writes the answer; keep-alive is honoured.
//
// Under abuse the socket stays serviceable:
// - A request's header block must arrive within header_timeout and the
//   whole request within request_timeout, both from the connection's
//   opening (or its previous answer): idle and trickling connections are cut
//   first, and block nobody meanwhile. A connection that sent nothing is
//   closed silently; one that sent part of a request gets 408.
// - One peer (a uid on the Unix socket, an address on TCP) holds at most its
//   share of max_connections (max_connections_per_peer). A connection with
//   no regular slot gets one of kReservedSlots (one per peer) in which
//   GET /healthz is answered and anything else gets 503 overloaded; with
//   those busy too it gets 503 at once and is closed.
// - Every refusal is an HTTP answer with the JSON error body: headers (and
//   chunk extensions, which count with them) above max_header_bytes 431,
//   bodies above max_body_bytes 413, a Transfer-Encoding other than exactly
//   "chunked" 501, anything malformed 400; bytes that are not UTF-8 are
//   quoted escaped. The Unix socket is created with
// socket_mode and socket_group; a stale socket file is replaced only when
// nobody answers on it. The peer's uid and pid (SO_PEERCRED) go with every
// request. Runs on the io_context it is given; start()/stop_accepting()
// must be called from that context's thread or before it runs.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstddef>
#include <memory>

#include "kiln/config/settings.h"
#include "kiln/rpc/service.h"

namespace kiln::rpc {

// Connections beyond max_connections (or beyond a peer's share) that may
// still be served, one request each: GET /healthz, anything else 503.
inline constexpr std::size_t kReservedSlots = 4;

class Server {
 public:
  Server(boost::asio::io_context& io, boost::asio::thread_pool& blocking_pool, Service& service,
         const config::RpcSettings& rpc, const config::TlsServerSettings& tls);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting. Throws kiln::Error kAlreadyRunning when an
  // agent answers on the socket, kIoError when binding fails,
  // kConfigInvalid for unusable TLS files or an unknown socket group.
  void start();
  // Closes the listeners (and removes the socket file); open connections
  // finish their current request.
  void stop_accepting();
  // New limits (max_connections and the per-peer share, sizes, timeouts) for requests read
  // from now on; the listeners stay as they are. Call on the io_context.
  void set_limits(const config::RpcSettings& rpc);
  // The TCP port actually bound (useful with port 0), or 0 without TCP.
  unsigned short tcp_port() const;
  std::size_t open_connections() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::rpc
