#include "kiln/glance/client.h"

#include <thread>

#include "kiln/util/error.h"
#include "kiln/util/uuid.h"

namespace kiln::glance {

namespace {

// Thrown inside one endpoint's attempt to ask for the next endpoint.
struct ServerError : Error {
  using Error::Error;
};

void check_image_id(const std::string& image_id) {
  if (!is_canonical_uuid(image_id)) {
    throw Error(ErrorCode::kInvalidArgument,
                "image id '" + image_id + "' is not a UUID (Glance image ids are UUIDs)");
  }
}

std::string describe_status(const http::Response& response) {
  std::string text = "HTTP " + std::to_string(response.status);
  std::string body = response.body.substr(0, 200);
  for (char& c : body) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return body.empty() ? text : text + ": " + body;
}

// Maps a Glance answer that is not the success we wanted to an error.
[[noreturn]] void throw_for_status(const http::Client& endpoint, const std::string& image_id,
                                   const http::Response& response) {
  if (response.status == 404) {
    throw Error(ErrorCode::kImageNotFound, "image " + image_id + " does not exist in Glance at " +
                                               endpoint.endpoint().to_string());
  }
  std::string message = "Glance at " + endpoint.endpoint().to_string() + " answered " +
                        describe_status(response) + " for image " + image_id;
  if (response.status >= 500) throw ServerError(ErrorCode::kGlanceError, message);
  throw Error(ErrorCode::kGlanceError, message);
}

}  // namespace

GlanceClient::GlanceClient(std::vector<http::Url> api_servers, http::Timeouts timeouts,
                           http::TlsOptions tls, std::shared_ptr<TokenSource> tokens, RetryPolicy retry)
    : tokens_(std::move(tokens)), retry_(retry) {
  if (api_servers.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "no Glance endpoint configured ([glance] api_servers or --glance)");
  }
  for (auto& url : api_servers) endpoints_.emplace_back(std::move(url), timeouts, tls);
}

http::Headers GlanceClient::auth_headers() const {
  if (!tokens_) return {};
  std::string token = tokens_->token();
  if (token.empty()) return {};
  return {{"X-Auth-Token", token}};
}

template <typename Call>
auto GlanceClient::with_failover(const Call& call, std::size_t attempts, std::size_t first) const {
  auto backoff = retry_.backoff;
  for (std::size_t i = 0;; ++i) {
    bool last = i + 1 >= attempts;
    try {
      return call(endpoints_[(first + i) % endpoints_.size()]);
    } catch (const ServerError& error) {
      if (last) throw Error(error.code(), error.what());
    } catch (const Error& error) {
      if (last || error.code() != ErrorCode::kHttpError) throw;
    }
    // Every endpoint failed once more: give them time before the next round.
    if ((i + 1) % endpoints_.size() == 0) {
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }
}

ImageRecord GlanceClient::get_image(const std::string& image_id) const {
  check_image_id(image_id);
  return with_failover([&](const http::Client& endpoint) {
    http::Response response = endpoint.get("/v2/images/" + image_id, auth_headers());
    if (response.status == 401 && tokens_) tokens_->invalidate();
    if (response.status != 200) throw_for_status(endpoint, image_id, response);
    ImageRecord record = parse_image_record(response.body);
    // The record names the image whose bytes are fetched and whose base name
    // is derived from it: a record for another image (a proxy's mistake, a
    // lying endpoint) must not become this image's base.
    if (record.id != image_id) {
      throw Error(ErrorCode::kGlanceError, "Glance at " + endpoint.endpoint().to_string() + " answered for image " + image_id +
                                               " with the record of image '" + record.id + "': refused");
    }
    return record;
  }, endpoints_.size() + retry_.retries);
}

DownloadResult GlanceClient::download(const std::string& image_id, std::uint64_t offset,
                                      const http::BodySink& sink, unsigned resume) const {
  check_image_id(image_id);
  http::Request request{"GET", "/v2/images/" + image_id + "/file", auth_headers(), ""};
  if (offset > 0) request.headers["Range"] = "bytes=" + std::to_string(offset) + "-";
  return with_failover([&](const http::Client& endpoint) {
    DownloadResult result;
    std::uint64_t skip = 0;  // bytes before `offset` when Glance ignored the Range
    auto accept = [&](const http::Response& head) {
      if (head.status == 200) skip = offset;
      return head.status == 200 || (offset > 0 && head.status == 206);
    };
    std::uint64_t body_bytes = 0;
    auto count = [&](std::span<const char> data) {
      body_bytes += data.size();
      std::size_t skipped = static_cast<std::size_t>(std::min<std::uint64_t>(skip, data.size()));
      skip -= skipped;
      data = data.subspan(skipped);
      if (data.empty()) return;
      result.bytes += data.size();
      sink(data);
    };
    http::Response response;
    try {
      response = endpoint.send_streamed(request, accept, count);
    } catch (const Error& error) {
      // Bytes reached the sink: the caller decides whether to resume; trying
      // the next endpoint from zero here would repeat them.
      if (result.bytes == 0) throw;
      throw Error(ErrorCode::kDownloadIncomplete, error.what());
    }
    if (response.status == 204) {
      throw Error(ErrorCode::kImageNotActive, "image " + image_id + " has no data in Glance (HTTP 204)");
    }
    if (response.status == 401 && tokens_) tokens_->invalidate();
    if (response.status != 200 && response.status != 206) throw_for_status(endpoint, image_id, response);
    if (response.content_length && *response.content_length != body_bytes) {
      throw Error(ErrorCode::kDownloadIncomplete,
                  "download of image " + image_id + " ended after " + std::to_string(body_bytes) +
                      " of " + std::to_string(*response.content_length) + " bytes");
    }
    result.content_md5 = response.header("content-md5");
    return result;
  }, endpoints_.size(), resume);  // a broken download is resumed by its caller, not repeated here
}

}  // namespace kiln::glance
