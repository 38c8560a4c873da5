// Internal to lib/cache: turning a Glance image into a verified raw base.
//
// fetch_base() streams the image into <base>.part (hashing and sparse writing
// on a second thread), resumes with Range requests after a dropped or stalled
// connection, verifies the digests, converts to raw when needed, and
// publishes <base> (its .info first) with fsyncs around the rename. On failure nothing is left.
// REQUIRES: the caller holds the base's lock.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "kiln/cache/cache_policy.h"
#include "kiln/cache/image_cache.h"
#include "kiln/glance/client.h"

namespace kiln::cache {

struct FetchOutcome {
  std::uint64_t downloaded_bytes = 0;  // bytes that crossed the network, retries included
  std::string base_sha256;
  unsigned resumes = 0;
};

FetchOutcome fetch_base(const glance::GlanceClient& glance, const CachePolicy& policy,
                        const glance::ImageRecord& record, const std::filesystem::path& base_path,
                        const FetchProgress& progress);

}  // namespace kiln::cache
