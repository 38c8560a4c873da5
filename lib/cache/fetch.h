// Internal to lib/cache: turning a Glance image into a verified raw base.
//
// fetch_base() streams the image into <base>.part, resumes with Range
// requests after a dropped or stalled connection, verifies the digests,
// converts to raw when needed, and publishes <base> (its .info first) with
// fsyncs around the rename. On failure nothing is left.
//
// Where the time goes, and why it is arranged so (issue 15; the floor is
// max(curl + qemu-img convert, sha512 of the image)): the network thread only
// copies bytes into 1 MiB chunks; Glance's os_hash (sha512, the one hash that
// cannot be avoided) runs on a thread of its own; the writer, on another,
// leaves zero blocks as holes, writes each run of data in one pwrite, feeds
// md5/signature and, for a raw image, the base digest (kiln/util/data_digest.h),
// and starts writeback every 8 MiB so the final fsync is short. A .part that
// is converted is never fsync'd (it is thrown away), its name goes as soon as
// qemu-img is done and its blocks are freed on a detached thread; qemu-img's
// output is fsync'd while its data extents are read for the digest. The base
// and its .info are durable before fetch_base() returns.
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
