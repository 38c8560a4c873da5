#include "request_reader.h"

#include <algorithm>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <cstdint>
#include <string>

namespace kiln::rpc::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

namespace {

// Room in the read buffer beyond max_header_bytes (see read_buffer_limit).
constexpr std::size_t kBufferSlack = 4096;

}  // namespace

std::size_t read_buffer_limit(const config::RpcSettings& rpc) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(rpc.max_header_bytes, UINT32_MAX)) + kBufferSlack;
}

RequestReader::RequestReader(const config::RpcSettings& rpc) : rpc_(rpc) {
  parser_.header_limit(static_cast<std::uint32_t>(std::min<std::uint64_t>(rpc.max_header_bytes, UINT32_MAX)));
  parser_.body_limit(rpc.max_body_bytes);
  // Chunk extensions are header data in all but name: they count against
  // max_header_bytes with the header block, or a client could send any
  // amount of them beside a tiny body.
  on_chunk_header_ = [this](std::uint64_t, beast::string_view extensions, boost::system::error_code& ec) {
    extension_bytes_ += extensions.size();
    if (header_bytes_ + extension_bytes_ > rpc_.max_header_bytes) {
      extensions_over_ = true;
      ec = bhttp::error::header_limit;
    }
  };
  parser_.on_chunk_header(on_chunk_header_);
}

std::optional<Response> RequestReader::header_read(std::size_t header_bytes) {
  header_bytes_ = header_bytes;
  // "chunked" alone is the only transfer coding kilnd decodes. Beast would
  // take "gzip, chunked" as chunked, and ignore "gzip" alone (then reading
  // the body as the next request).
  const auto& header = parser_.get();
  auto [first, last] = header.equal_range(bhttp::field::transfer_encoding);
  if (first == last) return std::nullopt;
  std::string value(first->value());
  bool several = std::next(first) != last;
  auto begin = value.find_first_not_of(" \t");
  auto end = value.find_last_not_of(" \t");
  std::string coding = begin == std::string::npos ? std::string() : value.substr(begin, end - begin + 1);
  if (!several && beast::iequals(coding, "chunked")) return std::nullopt;
  return error_response(501, ErrorCode::kInvalidArgument,
                        "Transfer-Encoding '" + value + (several ? "' (and more)" : "'") +
                            " is not supported: kilnd decodes 'chunked' alone");
}

std::optional<Response> RequestReader::refusal_for(const boost::system::error_code& ec, bool bytes_seen) const {
  if (extensions_over_ || ec == bhttp::error::buffer_overflow) {
    return error_response(431, ErrorCode::kInvalidArgument,
                          "request headers and chunk extensions exceed " + std::to_string(rpc_.max_header_bytes) +
                              " bytes");
  }
  if (ec == bhttp::error::header_limit) {
    return error_response(431, ErrorCode::kInvalidArgument,
                          "request headers exceed " + std::to_string(rpc_.max_header_bytes) + " bytes");
  }
  if (ec == bhttp::error::body_limit) {
    return error_response(413, ErrorCode::kInvalidArgument,
                          "request body exceeds " + std::to_string(rpc_.max_body_bytes) + " bytes");
  }
  // A connection that sent nothing (idle, or between keep-alive requests) is
  // closed without a word: an answer could cross a request it sends meanwhile.
  if (!bytes_seen) return std::nullopt;
  if (ec == beast::error::timeout) {
    return error_response(408, ErrorCode::kInvalidArgument,
                          "no whole request within the time allowed (header_timeout_seconds " +
                              std::to_string(rpc_.header_timeout.count()) + ", request_timeout_seconds " +
                              std::to_string(rpc_.request_timeout.count()) + ")");
  }
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe || ec == asio::error::operation_aborted) {
    return std::nullopt;
  }
  return error_response(400, ErrorCode::kInvalidArgument, "malformed HTTP request: " + ec.message());
}

Request RequestReader::take_request(const Peer& peer) {
  auto& message = parser_.get();
  return Request{std::string(message.method_string()), std::string(message.target()), std::move(message.body()),
                 peer};
}

bhttp::response<bhttp::string_body> to_http(const Response& response, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> message{static_cast<bhttp::status>(response.status), version};
  message.set(bhttp::field::server, "kilnd");
  message.set(bhttp::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) message.set(name, value);
  // error_response escapes what it quotes; `replace` is the last wall.
  message.body() = response.text_body
                       ? *response.text_body
                       : response.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  message.keep_alive(keep_alive);
  message.prepare_payload();
  return message;
}

}  // namespace kiln::rpc::detail
