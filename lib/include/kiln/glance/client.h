// A Glance Image API v2 client: image records and streaming downloads.
//
// `api_servers` is a list of endpoint roots (without /v2), as in nova.conf's
// [glance] api_servers. A request goes to the first endpoint and fails over to
// the next on a connection error or a 5xx answer; the last failure is thrown.
// A download fails over only before its first byte reached the sink (resuming
// a broken download is the cache's job). Thread-safe: calls share nothing.
#pragma once

#include <string>
#include <vector>

#include "kiln/glance/image_record.h"
#include "kiln/http/client.h"

namespace kiln::glance {

struct DownloadResult {
  std::uint64_t bytes = 0;
  std::string content_md5;  // Glance's hex MD5 of the whole image, "" if absent
};

class GlanceClient {
 public:
  // REQUIRES: api_servers is not empty.
  explicit GlanceClient(std::vector<http::Url> api_servers, http::Timeouts timeouts = {});

  // Throws kiln::Error: kInvalidArgument (image id not a UUID), kImageNotFound
  // (404), kGlanceError (other status), kHttpError (no endpoint reachable).
  ImageRecord get_image(const std::string& image_id) const;

  // Streams GET /v2/images/{id}/file into `sink`. Throws as get_image, plus
  // kImageNotActive when Glance has no data (204) and kDownloadIncomplete
  // when the body ends early.
  DownloadResult download(const std::string& image_id, const http::BodySink& sink) const;

 private:
  template <typename Call>
  auto with_failover(const Call& call) const;

  std::vector<http::Client> endpoints_;
};

}  // namespace kiln::glance
