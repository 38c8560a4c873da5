#include "kiln/http/client.h"

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <limits>

#include "kiln/util/error.h"

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kCollectLimit = 1024 * 1024;

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool is_ip_address(const std::string& host) {
  boost::system::error_code error;
  asio::ip::make_address(host, error);
  return !error;
}

// The TLS context for one connection: the trust anchors and whether to verify.
ssl::context make_tls_context(const TlsOptions& tls) {
  ssl::context context(ssl::context::tls_client);
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (!tls.verify) {
    context.set_verify_mode(ssl::verify_none);
    return context;
  }
  context.set_verify_mode(ssl::verify_peer);
  if (tls.ca_file.empty()) {
    context.set_default_verify_paths();
  } else {
    boost::system::error_code error;
    context.load_verify_file(tls.ca_file, error);
    if (error) {
      throw Error(ErrorCode::kHttpError, "cannot load CA file " + tls.ca_file + ": " + error.message());
    }
  }
  return context;
}

// Checks the certificate against the host we meant: its DNS name (and SNI), or its IP.
void expect_peer(SSL* handle, const std::string& host) {
  X509_VERIFY_PARAM* parameters = SSL_get0_param(handle);
  if (is_ip_address(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(parameters, host.c_str());
  } else {
    SSL_set_tlsext_host_name(handle, host.c_str());
    X509_VERIFY_PARAM_set1_host(parameters, host.c_str(), 0);
  }
}

beast::tcp_stream& lowest(beast::tcp_stream& stream) { return stream; }
beast::tcp_stream& lowest(beast::ssl_stream<beast::tcp_stream>& stream) { return stream.next_layer(); }

// Send the request, read the head, then the body: the same over TCP and TLS.
template <typename Stream>
asio::awaitable<Response> converse(Stream& stream, const Url& url, const Timeouts& timeouts,
                                   const Request& request, const SinkSelector& selector,
                                   const BodySink& sink) {
  bhttp::request<bhttp::string_body> message{bhttp::string_to_verb(request.method),
                                             url.base_path + request.path, 11};
  message.set(bhttp::field::host, url.authority());
  message.set(bhttp::field::user_agent, "kiln/0.1");
  for (const auto& [name, value] : request.headers) message.set(name, value);
  if (!request.body.empty()) {
    message.body() = request.body;
    message.prepare_payload();
  }
  lowest(stream).expires_after(timeouts.idle);
  co_await bhttp::async_write(stream, message, asio::use_awaitable);

  // Beast sizes each socket read by the buffer's free capacity (at least 512
  // bytes): without room reserved up front a download runs 512 bytes per
  // recvmsg, some 100x slower than curl.
  beast::flat_buffer buffer;
  buffer.reserve(kChunk);
  bhttp::response_parser<bhttp::buffer_body> parser;
  // Unlimited: memory stays bounded by our own chunking. (Beast 1.74 compares
  // lengths against an empty optional as "exceeded", so boost::none cannot be used.)
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await bhttp::async_read_header(stream, buffer, parser, asio::use_awaitable);

  Response response;
  response.status = parser.get().result_int();
  for (const auto& field : parser.get()) {
    response.headers[lowercase(std::string(field.name_string()))] = std::string(field.value());
  }
  if (auto length = parser.content_length()) response.content_length = *length;
  bool to_sink = selector && selector(response);

  std::vector<char> chunk(kChunk);
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    lowest(stream).expires_after(timeouts.idle);
    beast::error_code error;
    co_await bhttp::async_read(stream, buffer, parser,
                               asio::redirect_error(asio::use_awaitable, error));
    if (error && error != bhttp::error::need_buffer) throw beast::system_error(error);
    std::size_t got = chunk.size() - parser.get().body().size;
    if (to_sink) {
      sink(std::span<const char>(chunk.data(), got));
    } else if (response.body.size() < kCollectLimit) {
      response.body.append(chunk.data(), std::min(got, kCollectLimit - response.body.size()));
    }
  }
  co_return response;
}

// Connect (and shake hands for https), then converse.
asio::awaitable<Response> exchange(const Url& url, const Timeouts& timeouts, const TlsOptions& tls,
                                   const Request& request, const SinkSelector& selector,
                                   const BodySink& sink) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  beast::tcp_stream tcp_stream(executor);
  tcp_stream.expires_after(timeouts.connect);
  auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  co_await tcp_stream.async_connect(endpoints, asio::use_awaitable);
  if (url.scheme != "https") {
    Response response = co_await converse(tcp_stream, url, timeouts, request, selector, sink);
    beast::error_code ignored;
    tcp_stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return response;
  }
  ssl::context context = make_tls_context(tls);
  beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(tcp_stream), context);
  if (tls.verify) expect_peer(tls_stream.native_handle(), url.host);
  co_await tls_stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
  co_return co_await converse(tls_stream, url, timeouts, request, selector, sink);
}

std::string describe_failure(const boost::system::system_error& error) {
  if (error.code() == beast::error::timeout) return "timed out";
  std::string text = error.code().message();
  if (error.code().category() == asio::error::get_ssl_category()) {
    return "TLS failure: " + text;
  }
  return text;
}

}  // namespace

std::string Response::header(const std::string& lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? "" : it->second;
}

Client::Client(Url endpoint, Timeouts timeouts, TlsOptions tls)
    : endpoint_(std::move(endpoint)), timeouts_(timeouts), tls_(std::move(tls)) {}

Response Client::get(const std::string& path, const Headers& headers) const {
  return send(Request{"GET", path, headers, ""});
}

Response Client::send(const Request& request) const { return send_streamed(request, nullptr, nullptr); }

Response Client::send_streamed(const Request& request, const SinkSelector& selector,
                               const BodySink& sink) const {
  asio::io_context context;
  std::exception_ptr failure;
  Response response;
  asio::co_spawn(context, exchange(endpoint_, timeouts_, tls_, request, selector, sink),
                 [&](std::exception_ptr error, Response result) {
                   failure = error;
                   response = std::move(result);
                 });
  context.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& error) {
      throw Error(ErrorCode::kHttpError, request.method + " " + endpoint_.to_string() + request.path +
                                             " failed: " + describe_failure(error));
    }
  }
  return response;
}

}  // namespace kiln::http
