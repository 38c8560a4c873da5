#include "kiln/cache/image_cache.h"

#include <fcntl.h>

#include <optional>

#include "kiln/image/converter.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/sparse_writer.h"

namespace kiln::cache {

namespace fs = std::filesystem;

namespace {

fs::path with_suffix(const fs::path& path, const char* suffix) {
  return fs::path(path.string() + suffix);
}

void check_usable(const glance::ImageRecord& record) {
  if (record.status != "active") {
    throw Error(ErrorCode::kImageNotActive, "image " + record.id + " is not active (status " +
                                                (record.status.empty() ? "unknown" : record.status) +
                                                ")");
  }
  if (!image::qemu_format_for(record.disk_format)) {
    throw Error(ErrorCode::kImageFormatRefused,
                "image " + record.id + " has disk_format '" + record.disk_format +
                    "', which kiln cannot turn into a raw disk");
  }
}

// Compares a digest computed while streaming with the one Glance recorded.
void check_digest(const glance::ImageRecord& record, const std::string& what,
                  const std::string& expected, const std::string& actual) {
  if (expected != actual) {
    throw Error(ErrorCode::kChecksumMismatch, "image " + record.id + " failed verification: " +
                                                  what + " is " + actual + ", Glance recorded " +
                                                  expected + "; download discarded");
  }
}

}  // namespace

std::string base_name_for(const std::string& image_id) { return hex_digest_of("sha1", image_id); }

ImageCache::ImageCache(fs::path instances_path, const glance::GlanceClient& glance)
    : instances_path_(std::move(instances_path)), glance_(glance) {}

fs::path ImageCache::lock_path(const std::string& base_name) const {
  return instances_path_ / "locks" / ("kiln-" + base_name);
}

glance::ImageRecord ImageCache::lookup(const std::string& image_id) const {
  glance::ImageRecord record = glance_.get_image(image_id);
  check_usable(record);
  return record;
}

BaseLease ImageCache::acquire(const glance::ImageRecord& record) const {
  check_usable(record);
  std::string name = base_name_for(record.id);
  fs::path base_path = base_directory() / name;
  std::error_code error;
  fs::create_directories(base_directory(), error);
  if (error) throw_io_error("cannot create " + base_directory().string(), error.value());

  FileLock lock(lock_path(name));
  std::uint64_t downloaded = 0;
  if (!fs::exists(base_path, error)) fetch(record, base_path, downloaded);
  BaseImage base{base_path, kiln::file_size(base_path), record, downloaded};
  return BaseLease{std::move(base), std::move(lock)};
}

// REQUIRES: the base's lock is held, so any .part/.converted are leftovers.
void ImageCache::fetch(const glance::ImageRecord& record, const fs::path& base_path,
                       std::uint64_t& downloaded_bytes) const {
  TemporaryPath part(with_suffix(base_path, ".part"));
  TemporaryPath converted(with_suffix(base_path, ".converted"));
  std::error_code ignored;
  fs::remove(part.path(), ignored);
  fs::remove(converted.path(), ignored);

  std::optional<Hasher> os_hash;
  if (!record.os_hash_value.empty()) os_hash.emplace(record.os_hash_algo.empty() ? "sha512" : record.os_hash_algo);
  Hasher md5("md5");
  std::string content_md5;
  {
    UniqueFd fd = open_file(part.path(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    SparseWriter writer(fd.get(), part.path());
    auto result = glance_.download(record.id, [&](std::span<const char> data) {
      if (os_hash) os_hash->update(data);
      md5.update(data);
      writer.write(data);
    });
    writer.finish();
    fsync_file(fd.get(), part.path());
    downloaded_bytes = result.bytes;
    content_md5 = result.content_md5;
    if (record.size && *record.size != result.bytes) {
      throw Error(ErrorCode::kDownloadIncomplete,
                  "image " + record.id + " is " + std::to_string(*record.size) +
                      " bytes in Glance but " + std::to_string(result.bytes) + " arrived");
    }
  }
  if (os_hash) check_digest(record, os_hash->algorithm(), record.os_hash_value, os_hash->hex_digest());
  // md5 is weak; it is checked in addition when Glance recorded it, and the
  // Content-MD5 header is the last resort when the record has no digest at all.
  std::string md5_hex = md5.hex_digest();
  if (!record.checksum.empty()) {
    check_digest(record, "md5", record.checksum, md5_hex);
  } else if (!os_hash && !content_md5.empty()) {
    check_digest(record, "md5 (Content-MD5)", content_md5, md5_hex);
  }

  std::string qemu_format = *image::qemu_format_for(record.disk_format);
  if (qemu_format == "raw") {
    publish_file(part.path(), base_path);
    part.keep();
    return;
  }
  image::convert_to_raw(part.path(), qemu_format, converted.path());
  {
    UniqueFd fd = open_file(converted.path(), O_RDONLY);
    fsync_file(fd.get(), converted.path());
  }
  publish_file(converted.path(), base_path);
  converted.keep();
}

}  // namespace kiln::cache
