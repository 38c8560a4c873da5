// What kilnd's HTTP transport does with the bytes of a request, apart from
// the socket: a Beast parser with the [rpc] limits, the checks that follow
// the header, the answer to a read that failed, and the serialised answer.
// server.cpp drives it from its sockets, the RPC fuzzer (tests/fuzz) from
// its input, so both exercise the same code.
//
// Promises: chunk extensions count against max_header_bytes together with
// the header block; a Transfer-Encoding other than exactly "chunked" is
// refused with 501; every refusal is a Response with the JSON error body
// (kiln/rpc/message.h), and to_http never throws on a body's content.
// Internal to lib/rpc (not a public header). Not thread-safe; one reader per
// request.
#pragma once

#include <boost/beast/http.hpp>
#include <cstdint>
#include <functional>
#include <optional>

#include "kiln/config/settings.h"
#include "kiln/rpc/message.h"

namespace kiln::rpc::detail {

// The read buffer's largest size: a header block must fit in it whole (Beast
// parses it in one piece), and so must a chunk header line or the trailer.
// Body bytes only pass through it, so this also caps a chunk extension,
// which Beast's header limit does not see.
std::size_t read_buffer_limit(const config::RpcSettings& rpc);

class RequestReader {
 public:
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  explicit RequestReader(const config::RpcSettings& rpc);
  // Beast keeps a reference to the chunk callback: neither copied nor moved.
  RequestReader(const RequestReader&) = delete;
  RequestReader& operator=(const RequestReader&) = delete;

  Parser& parser() { return parser_; }

  // REQUIRES: the header was read whole, in `header_bytes` bytes (what
  // http::read_header returned). Returns the refusal of its
  // Transfer-Encoding, or nothing. From then on the chunk extensions of the
  // body count against max_header_bytes with those bytes.
  std::optional<Response> header_read(std::size_t header_bytes);

  // The answer to a read that failed with `ec` (431, 413, 408, 400), or
  // nothing when the connection is better closed without a word: the peer
  // sent nothing yet (`bytes_seen` false) or is gone. beast::error::timeout
  // stands for either deadline.
  std::optional<Response> refusal_for(const boost::system::error_code& ec, bool bytes_seen) const;

  // REQUIRES: the whole request was read. Its method, target and body.
  Request take_request(const Peer& peer);

 private:
  const config::RpcSettings& rpc_;
  Parser parser_;
  std::uint64_t header_bytes_ = 0;
  std::uint64_t extension_bytes_ = 0;
  bool extensions_over_ = false;
  std::function<void(std::uint64_t, boost::beast::string_view, boost::system::error_code&)> on_chunk_header_;
};

// The HTTP answer for `response`; its JSON body is dumped with bytes that
// are not UTF-8 replaced, so that nothing in it can make the dump throw.
boost::beast::http::response<boost::beast::http::string_body> to_http(const Response& response, unsigned version,
                                                                      bool keep_alive);

}  // namespace kiln::rpc::detail
