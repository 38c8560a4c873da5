// The _base image cache: one raw base file per Glance image.
//
// Layout (Nova's): <instances_path>/_base/<sha1hex(image id)> is the raw base
// and <base>.info describes it (kiln/cache/base_info.h). A base is written
// only as <base>.part (download) and <base>.converted (qemu-img output); the
// one that becomes the base is fsync'd, its .info written, and then renamed
// into place: a base under its final name is always complete, verified and
// durable. (The .part of a converted image is never fsync'd: it is thrown away.)
//
// Single flight: <instances_path>/locks/kiln-<name> is the per-base flock taken
// by everything that creates a base, creates an overlay on it or deletes it.
// Concurrent acquisitions of one image, from threads or processes, download it
// once; those that waited for a download that failed get the same error
// without downloading again (locks/kiln-<name>.failed records it).
//
// Thread-safe: the filesystem and the locks are the state; the only memory is
// the last record Glance gave for each image (lookup() says who may use it),
// the lookups in flight and the records of the downloads in progress, under
// a mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/cache_policy.h"
#include "kiln/glance/client.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"

namespace kiln::cache {

// sha1 hex of the image id string, as Nova names bases.
std::string base_name_for(const std::string& image_id);

// Where the time of a cold fetch went, in the order the phases ran
// ("download", "inspect", "convert", "publish", ...): what tools/bench prints.
struct FetchPhase {
  std::string name;
  std::chrono::microseconds duration{0};
};

struct BaseImage {
  std::filesystem::path path;          // absolute path of the raw base
  std::uint64_t virtual_size = 0;      // bytes the guest sees (file size of a raw base)
  glance::ImageRecord record;          // what Glance said about the image
  std::uint64_t downloaded_bytes = 0;  // 0 when the base was already cached
  unsigned resumes = 0;                // downloads resumed after a broken connection
  std::vector<FetchPhase> phases;      // empty when the base was already cached
};

// {path, image_id, image_name, disk_format, virtual_size, downloaded_bytes,
// resumes, phases_ms}: `kilnctl cache fetch --json`, kilnd's pre-cache
// result, and the "base" of a boot's result. phases_ms (milliseconds per
// phase of a cold fetch; tools/bench reads them) is {} for a cached base.
void to_json(nlohmann::json& out, const BaseImage& base);

// A base together with its lock: while a lease is alive nobody else creates,
// replaces or deletes that base, so overlays can safely be made on it. One
// thread may hold several leases on one base (a kernel that is also the
// ramdisk): they share one flock, released with the last of them.
struct BaseLease {
  BaseImage base;
  std::shared_ptr<void> lock;
};

// Called from the downloading thread with bytes so far and the total if known.
using FetchProgress = std::function<void(std::uint64_t done, std::optional<std::uint64_t> total)>;

class ImageCache {
 public:
  // REQUIRES: instances_path is absolute.
  ImageCache(std::filesystem::path instances_path, const glance::GlanceClient& glance,
             CachePolicy policy = {});

  // Reads the image record from Glance and checks that it may become a
  // base: status "active", disk_format and container_format allowed.
  // Fetches no data. Glance is not asked again when an answer at least as
  // fresh as the caller needs is at hand:
  //  - a request to Glance already in flight for the image (its answer goes
  //    to everyone who asked while it was in flight);
  //  - while this cache downloads the image, the record the download is
  //    verified against;
  //  - a record Glance gave in answer to a request sent at or after
  //    `received_at` (when the caller's boot was accepted: such a record is
  //    as fresh as one asked for when the boot arrived, so the boots of a
  //    storm queued behind a download share one answer), or within
  //    image_record_ttl of when it was asked for.
  // `received_at` nullopt means now: only the first two apply (with a TTL,
  // the third).
  // Throws kiln::Error: kImageNotFound, kImageNotActive, kImageFormatRefused,
  // kHttpError, kGlanceError.
  glance::ImageRecord lookup(const std::string& image_id,
                             std::optional<std::chrono::steady_clock::time_point> received_at = std::nullopt) const;

  // The record to boot from when the request carried one (`offered`, the
  // controller's copy of Glance's record, as nova passes image_meta):
  // `offered` itself when it is usable and the base cached for its image was
  // made from the same bytes (its .info has the same disk_format and size
  // and the same os_hash_value, or md5 when neither has an os_hash), so that
  // a warm boot asks Glance nothing; else lookup(offered.id, received_at).
  // Throws as lookup().
  glance::ImageRecord lookup(const glance::ImageRecord& offered,
                             std::optional<std::chrono::steady_clock::time_point> received_at = std::nullopt) const;

  // Returns the base for `record` (from lookup()), downloading, verifying and
  // converting it first if it is not cached, and records the use. A base
  // that must be fetched is fetched by Glance's record: an offered one is
  // looked up first, and the BaseImage carries Glance's.
  // Throws kiln::Error: kInsufficientSpace, kChecksumMismatch,
  // kDownloadIncomplete, kConversionFailed, kHttpError, kGlanceError,
  // kIoError, kLockFailed (after policy().lock_timeout, naming the holder).
  // On failure nothing is left in _base.
  BaseLease acquire(const glance::ImageRecord& record, const FetchProgress& progress = nullptr) const;

  std::filesystem::path base_directory() const { return layout::base_directory(instances_path_); }
  std::filesystem::path lock_directory() const { return layout::lock_directory(instances_path_); }
  std::filesystem::path lock_path(const std::string& base_name) const;
  const CachePolicy& policy() const { return policy_; }

 private:
  void ensure_space(const glance::ImageRecord& record) const;

  struct RememberedRecords;

  std::filesystem::path instances_path_;
  const glance::GlanceClient& glance_;
  CachePolicy policy_;
  std::shared_ptr<RememberedRecords> records_;
};

}  // namespace kiln::cache
