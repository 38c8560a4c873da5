// The _base image cache: one raw base file per Glance image.
//
// Layout (Nova's): <instances_path>/_base/<sha1hex(image id)> is the raw base,
// written only as _base/<name>.part (download) and _base/<name>.converted
// (qemu-img output), each fsync'd and renamed into place, so a base under its
// final name is always complete and verified. <instances_path>/locks/kiln-<name>
// is the per-base flock taken by everything that creates a base or an overlay
// on it: concurrent acquisitions of one image, from threads or processes,
// download it once.
//
// Thread-safe: an ImageCache holds no mutable state; the filesystem and the
// locks are the state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "kiln/glance/client.h"
#include "kiln/util/lock.h"

namespace kiln::cache {

// sha1 hex of the image id string, as Nova names bases.
std::string base_name_for(const std::string& image_id);

struct BaseImage {
  std::filesystem::path path;          // absolute path of the raw base
  std::uint64_t virtual_size = 0;      // bytes the guest sees (file size of a raw base)
  glance::ImageRecord record;          // what Glance said about the image
  std::uint64_t downloaded_bytes = 0;  // 0 when the base was already cached
};

// A base together with its lock: while a lease is alive nobody else creates,
// replaces or deletes that base, so overlays can safely be made on it.
struct BaseLease {
  BaseImage base;
  FileLock lock;
};

class ImageCache {
 public:
  // REQUIRES: instances_path is absolute.
  ImageCache(std::filesystem::path instances_path, const glance::GlanceClient& glance);

  // Reads the image record from Glance and checks that it can become a base:
  // status "active" and a disk_format kiln can convert. Fetches no data.
  // Throws kiln::Error: kImageNotFound, kImageNotActive, kImageFormatRefused,
  // kHttpError, kGlanceError.
  glance::ImageRecord lookup(const std::string& image_id) const;

  // Returns the base for `record` (from lookup()), downloading, verifying and
  // converting it first if it is not cached.
  // Throws kiln::Error: kChecksumMismatch, kDownloadIncomplete,
  // kConversionFailed, kHttpError, kGlanceError, kIoError, kLockFailed.
  // On failure nothing is left in _base.
  BaseLease acquire(const glance::ImageRecord& record) const;

  std::filesystem::path base_directory() const { return instances_path_ / "_base"; }
  std::filesystem::path lock_path(const std::string& base_name) const;

 private:
  void fetch(const glance::ImageRecord& record, const std::filesystem::path& base_path,
             std::uint64_t& downloaded_bytes) const;

  std::filesystem::path instances_path_;
  const glance::GlanceClient& glance_;
};

}  // namespace kiln::cache
