#include "kiln/http/client.h"

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <limits>
#include <utility>

#include "kiln/util/error.h"

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kCollectLimit = 1024 * 1024;

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// The exchange, read top to bottom: connect, send, read the head, read the body.
asio::awaitable<Response> exchange(const Url& url, const Timeouts& timeouts, std::string target,
                                   const Headers& headers, const SinkSelector& selector,
                                   const BodySink& sink) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  beast::tcp_stream stream(executor);

  stream.expires_after(timeouts.connect);
  auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  co_await stream.async_connect(endpoints, asio::use_awaitable);

  bhttp::request<bhttp::empty_body> request{bhttp::verb::get, target, 11};
  request.set(bhttp::field::host, url.authority());
  request.set(bhttp::field::user_agent, "kiln/0.1");
  for (const auto& [name, value] : headers) request.set(name, value);
  stream.expires_after(timeouts.idle);
  co_await bhttp::async_write(stream, request, asio::use_awaitable);

  beast::flat_buffer buffer;
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
    stream.expires_after(timeouts.idle);
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
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return response;
}

}  // namespace

std::string Response::header(const std::string& lowercase_name) const {
  auto it = headers.find(lowercase_name);
  return it == headers.end() ? "" : it->second;
}

Client::Client(Url endpoint, Timeouts timeouts)
    : endpoint_(std::move(endpoint)), timeouts_(timeouts) {}

Response Client::get(const std::string& path, const Headers& headers) const {
  return get_streamed(path, headers, nullptr, nullptr);
}

Response Client::get_streamed(const std::string& path, const Headers& headers,
                              const SinkSelector& selector, const BodySink& sink) const {
  asio::io_context context;
  std::exception_ptr failure;
  Response response;
  asio::co_spawn(context,
                 exchange(endpoint_, timeouts_, endpoint_.base_path + path, headers, selector, sink),
                 [&](std::exception_ptr error, Response result) {
                   failure = error;
                   response = std::move(result);
                 });
  context.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& error) {
      std::string what = error.code() == beast::error::timeout ? "timed out" : error.code().message();
      throw Error(ErrorCode::kHttpError,
                  "GET " + endpoint_.to_string() + path + " failed: " + what);
    }
  }
  return response;
}

}  // namespace kiln::http
