// kilnd's HTTP/1.1 transport: Boost.Beast on Asio C++20 coroutines, over the
// Unix socket and optionally TCP (mutual TLS, or plain on loopback).
//
// One coroutine per connection reads a request, hands it to the Service on
// a small blocking pool (the Service touches disk and libvirt; the event
// loop never does) and writes the answer; keep-alive is honoured. Each
// request must arrive whole within request_timeout (a client trickling bytes
// is cut then, and blocks nobody meanwhile); headers above max_header_bytes
// get 431, bodies above max_body_bytes 413; connections beyond
// max_connections are closed at once. The Unix socket is created with
// socket_mode and socket_group; a stale socket file is replaced only when
// nobody answers on it. The peer's uid and pid (SO_PEERCRED) go with every
// request. Runs on the io_context it is given; start()/stop_accepting()
// must be called from that context's thread or before it runs.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <memory>

#include "kiln/config/settings.h"
#include "kiln/rpc/service.h"

namespace kiln::rpc {

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
  // New limits (max_connections, sizes, request_timeout) for requests read
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
