// A Glance Image API v2 client: image records and streaming downloads.
//
// `api_servers` is a list of endpoint roots (without /v2), as in nova.conf's
// [glance] api_servers. A request goes to the first endpoint and fails over to
// the next on a connection error or a 5xx answer; an image record is asked
// for `retries` more times (nova's num_retries), round the endpoints, with a
// doubling backoff after each round; the last failure is thrown.
// A download fails over only before its first byte reached the sink (resuming
// a broken download is the cache's job; each resume starts one endpoint
// further, so an endpoint that stalls or cuts is not asked again first).
// Thread-safe: calls share nothing.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "kiln/glance/image_record.h"
#include "kiln/http/client.h"

namespace kiln::glance {

struct DownloadResult {
  std::uint64_t bytes = 0;     // bytes given to the sink by this call
  std::string content_md5;     // Glance's hex MD5 of the whole image, "" if absent
};

// Supplies the X-Auth-Token for each request ("" = send none). Implementations
// renew tokens before they expire and are thread-safe.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual std::string token() = 0;
  // The last token was refused (401): fetch a new one on the next token().
  virtual void invalidate() = 0;
};

struct RetryPolicy {
  unsigned retries = 0;  // attempts beyond one per endpoint
  std::chrono::milliseconds backoff{1000};
};

class GlanceClient {
 public:
  // REQUIRES: api_servers is not empty.
  explicit GlanceClient(std::vector<http::Url> api_servers, http::Timeouts timeouts = {},
                        http::TlsOptions tls = {}, std::shared_ptr<TokenSource> tokens = nullptr,
                        RetryPolicy retry = {});

  // Throws kiln::Error: kInvalidArgument (image id not a UUID), kImageNotFound
  // (404), kGlanceError (other status), kHttpError (no endpoint reachable).
  ImageRecord get_image(const std::string& image_id) const;

  // Streams GET /v2/images/{id}/file into `sink`, from byte `offset` on (a
  // Range request) when offset > 0; if Glance ignores the Range and sends the
  // whole image, the bytes before `offset` are dropped, so the sink always
  // sees the image from `offset`. Throws as get_image, plus
  // kImageNotActive when Glance has no data (204) and kDownloadIncomplete
  // when the body ends early (after some bytes reached the sink). `resume`
  // counts the earlier attempts of this download: attempt k starts at
  // endpoint k (round the list).
  DownloadResult download(const std::string& image_id, std::uint64_t offset, const http::BodySink& sink,
                          unsigned resume = 0) const;

 private:
  template <typename Call>
  auto with_failover(const Call& call, std::size_t attempts, std::size_t first = 0) const;
  http::Headers auth_headers() const;

  std::vector<http::Client> endpoints_;
  std::shared_ptr<TokenSource> tokens_;
  RetryPolicy retry_;
};

}  // namespace kiln::glance
