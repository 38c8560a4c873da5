// libFuzzer target: any bytes, as a client would send them on kilnd's
// socket, go through the code kilnd runs on a request: Beast's parser with
// kilnd's limits and checks (lib/rpc/request_reader: header and chunk
// extension limits, Transfer-Encoding, the refusal of a failed read), then
// Service::handle (the router, the schema validation of bodies, and the
// synchronous routes) on a Service with libvirt test:///default and an
// instances path in a temporary directory, and the answer's serialisation.
// Several requests may follow each other on the "connection" (keep-alive).
//
// Nothing may crash, trip ASan or UBSan, or throw; and every answer must be
// HTTP/1.1 that Beast parses back, with a status from 200 to 599 and a body
// that is JSON (the error body with a code and a message for 4xx and 5xx),
// or Prometheus text for /metrics. A violation aborts, as a crash would.
//
// The Service is drained before the first input: boots, deletes and
// pre-caches are parsed, validated and routed, then refused with
// shutting_down, so that no operation runs in the background (it would make
// one input depend on the ones before it, and fill memory). The first byte
// of an input picks how many bytes each read delivers (1 to 31, or all), so
// that headers and chunks also arrive split as a trickling client splits them.
//
// Build and run (option KILN_FUZZ of the top-level CMakeLists.txt; seeds from make-rpc-seeds):
//   CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF
//   cmake --build build-fuzz --target fuzz_rpc
//   tests/fuzz/make-rpc-seeds seeds && build-fuzz/tests/fuzz/fuzz_rpc -dict=tests/fuzz/http.dict \
//     -max_total_time=60 corpus seeds
// (tools/fuzz-rpc does all of it.)
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include "kiln/config/settings.h"
#include "kiln/http/url.h"
#include "kiln/rpc/message.h"
#include "kiln/rpc/service.h"
#include "request_reader.h"

namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

[[noreturn]] void violation(const std::string& what, const std::string& answer) {
  std::fprintf(stderr, "fuzz_rpc: %s\nanswer: %s\n", what.c_str(), answer.substr(0, 2000).c_str());
  std::abort();
}

// The input as a socket that delivers at most `piece` bytes per read, then
// end of file.
class InputStream {
 public:
  InputStream(const std::uint8_t* data, std::size_t size, std::size_t piece)
      : data_(data), size_(size), piece_(piece) {}

  template <typename MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    if (position_ == size_) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    std::size_t n = asio::buffer_copy(buffers, asio::buffer(data_ + position_, std::min(piece_, size_ - position_)));
    position_ += n;
    return n;
  }
  template <typename MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t piece_;
  std::size_t position_ = 0;
};

struct Harness {
  fs::path directory;
  kiln::config::Settings settings;
  std::unique_ptr<kiln::rpc::Service> service;

  Harness() {
    char pattern[] = "/tmp/kiln-fuzz-rpc.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) std::abort();
    directory = pattern;
    settings.instances_path = directory / "instances";
    fs::create_directories(settings.instances_path);
    settings.libvirt_uri = "test:///default";
    // Nothing listens on port 1; no route that runs here reaches Glance anyway.
    settings.glance_api_servers = {kiln::http::parse_url("http://127.0.0.1:1")};
    settings.rpc.max_header_bytes = 2048;
    settings.rpc.max_body_bytes = 16384;
    service = std::make_unique<kiln::rpc::Service>(settings);
    if (!service->drain(std::chrono::milliseconds(0))) std::abort();
  }
  ~Harness() {
    std::error_code ignored;
    fs::remove_all(directory, ignored);
  }
};

Harness* harness = nullptr;

// Serialises `response` as kilnd would and checks that it is HTTP a client
// can read, with the body its status promises.
void check_answer(const kiln::rpc::Response& response, unsigned version, bool keep_alive) {
  std::ostringstream text;
  text << kiln::rpc::detail::to_http(response, version, keep_alive);
  std::string answer = text.str();
  if (response.status < 200 || response.status > 599) violation("status out of range", answer);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.eager(true);
  parser.body_limit(64 * 1024 * 1024);
  boost::system::error_code ec;
  parser.put(asio::buffer(answer), ec);
  if (ec || !parser.is_done()) violation("the answer is not HTTP Beast reads back: " + ec.message(), answer);
  const auto& message = parser.get();
  if (message.result_int() != response.status) violation("the status line differs", answer);
  if (response.text_body) return;  // /metrics, Prometheus text
  auto body = nlohmann::json::parse(message.body(), nullptr, false);
  if (body.is_discarded()) violation("the body is not JSON", answer);
  if (response.status >= 400) {
    if (!body.contains("error") || !body["error"].is_object() || !body["error"].contains("code") ||
        !body["error"]["code"].is_string() || !body["error"].contains("message") ||
        !body["error"]["message"].is_string()) {
      violation("an error answer without the error body", answer);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  harness = new Harness();  // lives until exit: the Service's threads outlive any input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::size_t piece = data[0] % 32 == 0 ? size : data[0] % 32;
  InputStream stream(data + 1, size - 1, piece);
  const auto& rpc = harness->settings.rpc;
  beast::flat_buffer buffer(kiln::rpc::detail::read_buffer_limit(rpc));
  kiln::rpc::Peer peer;
  peer.uid = 0;
  peer.pid = 1;
  peer.address = "unix";
  // The same steps as Server::Impl::serve, without the deadlines and slots.
  for (int requests = 0; requests < 16; ++requests) {
    kiln::rpc::detail::RequestReader reader(rpc);
    auto& parser = reader.parser();
    boost::system::error_code ec;
    std::size_t header_bytes = bhttp::read_header(stream, buffer, parser, ec);
    std::optional<kiln::rpc::Response> refusal;
    if (!ec) refusal = reader.header_read(header_bytes);
    if (!ec && !refusal) bhttp::read(stream, buffer, parser, ec);
    if (ec && !refusal) {
      refusal = reader.refusal_for(ec, parser.got_some() || buffer.size() > 0);
      if (!refusal) return 0;
    }
    if (refusal) {
      if (refusal->status < 400) violation("a refusal that is not an error", refusal->body.dump());
      check_answer(*refusal, 11, false);
      return 0;
    }
    bool keep_alive = parser.get().keep_alive();
    unsigned version = parser.get().version();
    kiln::rpc::Response response;
    try {
      response = harness->service->handle(reader.take_request(peer));
    } catch (const std::exception& error) {
      violation(std::string("Service::handle threw: ") + error.what(), "");
    }
    check_answer(response, version, keep_alive);
    if (!keep_alive) return 0;
  }
  return 0;
}
