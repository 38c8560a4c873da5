// Internal to lib/cache: turning a Glance image into a verified raw base.
//
// fetch_base() streams the image into <base>.part (hashing and sparse writing
// on a second thread), resumes with Range requests after a dropped or stalled
// connection, verifies the digests, converts to raw when needed, and
// publishes <base> (its .info first) with fsyncs around the rename. On failure nothing is left.
//
// adopt_foreign_base() takes a raw base another tool made under kiln's name
// (nova's fetch_to_raw on the same instances path) without downloading it:
// the file must be exactly Glance's raw image, proven as a download is proven
// (size, Glance's digests, the signature when required, the inspector and
// qemu-img's second opinion); then it gets a .info in place. The file itself
// is never replaced, so the instances already backed by it keep their inode.
// REQUIRES (both): the caller holds the base's lock.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/cache_policy.h"
#include "kiln/cache/image_cache.h"
#include "kiln/glance/client.h"

namespace kiln::cache {

struct FetchOutcome {
  std::uint64_t downloaded_bytes = 0;  // bytes that crossed the network, retries included
  std::string base_digest;  // DataDigest of the published base
  unsigned resumes = 0;
  std::vector<FetchPhase> phases;
};

FetchOutcome fetch_base(const glance::GlanceClient& glance, const CachePolicy& policy,
                        const glance::ImageRecord& record, const std::filesystem::path& base_path,
                        const FetchProgress& progress);

// The outcome (0 bytes downloaded) when the base was adopted; nothing when it
// is not a raw image whose bytes check out, and must be fetched again.
std::optional<FetchOutcome> adopt_foreign_base(const CachePolicy& policy, const glance::ImageRecord& record,
                                               const std::filesystem::path& base_path);

}  // namespace kiln::cache
