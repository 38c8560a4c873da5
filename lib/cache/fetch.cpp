#include "fetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <thread>

#include "kiln/cache/base_info.h"
#include "kiln/image/converter.h"
#include "kiln/image/inspector.h"
#include "kiln/util/chunk_pipeline.h"
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

// The digests (and signature) one download is checked against, fed as bytes stream.
class Verifier {
 public:
  Verifier(const glance::ImageRecord& record, const CachePolicy& policy, bool raw_image)
      : record_(record) {
    // Built before any byte is fetched: a bad certificate refuses the image up front.
    if (policy.verify_signatures) {
      signature_ = image::make_signature_verifier(record.properties, policy.signatures, record.id);
    }
    if (!record.os_hash_value.empty()) {
      os_hash_.emplace(record.os_hash_algo.empty() ? "sha512" : record.os_hash_algo);
    }
    // md5 only as python-glanceclient uses it: when there is no os_hash (or when configured).
    if (!os_hash_ || (policy.verify_md5_always && !record.checksum.empty())) md5_.emplace("md5");
    // A raw image is its own base: its sha256 is computed on the way in.
    if (raw_image) base_sha256_.emplace("sha256");
  }

  void update(std::span<const char> data) {
    if (os_hash_) os_hash_->update(data);
    if (md5_) md5_->update(data);
    if (base_sha256_) base_sha256_->update(data);
    if (signature_) signature_->update(data);
  }

  // Throws kChecksumMismatch unless every digest Glance gave matches. Returns
  // the raw base's sha256 when it was computed here.
  std::string check(const std::string& content_md5) {
    if (os_hash_) expect(os_hash_->algorithm(), record_.os_hash_value, os_hash_->hex_digest());
    if (md5_) {
      std::string actual = md5_->hex_digest();
      if (!record_.checksum.empty()) {
        expect("md5", record_.checksum, actual);
      } else if (!os_hash_ && !content_md5.empty()) {
        expect("md5 (Content-MD5)", content_md5, actual);
      } else if (!os_hash_) {
        throw Error(ErrorCode::kChecksumMismatch,
                    "image " + record_.id + " has no checksum in Glance and no Content-MD5: "
                    "it cannot be verified, so it is not used");
      }
    }
    if (signature_) signature_->verify();
    return base_sha256_ ? base_sha256_->hex_digest() : "";
  }

 private:
  void expect(const std::string& what, const std::string& expected, const std::string& actual) const {
    if (expected != actual) {
      throw Error(ErrorCode::kChecksumMismatch,
                  "image " + record_.id + " failed verification: " + what + " of the download is " +
                      actual + ", Glance recorded " + expected + "; download discarded");
    }
  }

  const glance::ImageRecord& record_;
  std::optional<Hasher> os_hash_;
  std::optional<Hasher> md5_;
  std::optional<Hasher> base_sha256_;
  std::optional<image::SignatureVerifier> signature_;
};

bool resumable(const Error& error) {
  return error.code() == ErrorCode::kDownloadIncomplete || error.code() == ErrorCode::kHttpError ||
         error.code() == ErrorCode::kGlanceError;
}

struct Download {
  std::uint64_t network_bytes = 0;
  std::string content_md5;
  unsigned resumes = 0;
};

// Streams the image into `part`, resuming from the bytes already written.
Download download(const glance::GlanceClient& glance, const CachePolicy& policy,
                  const glance::ImageRecord& record, const fs::path& part, Verifier& verifier,
                  const FetchProgress& progress) {
  UniqueFd fd = open_file(part, O_WRONLY | O_CREAT | O_EXCL, 0644);
  SparseWriter writer(fd.get(), part);
  ChunkPipeline pipeline([&](std::span<const char> chunk) {
    verifier.update(chunk);
    writer.write(chunk);
  });
  Download result;
  std::uint64_t received = 0;  // bytes handed to the pipeline, in image order
  auto backoff = policy.retry_backoff;
  for (unsigned attempt = 0;; ++attempt) {
    try {
      auto answer = glance.download(record.id, received, [&](std::span<const char> data) {
        pipeline.push(data);
        received += data.size();
        result.network_bytes += data.size();
        if (progress) progress(received, record.size);
      });
      result.content_md5 = answer.content_md5;
      break;
    } catch (const Error& error) {
      if (!resumable(error) || attempt >= policy.download_retries) throw;
      ++result.resumes;
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }
  pipeline.finish();
  writer.finish();
  fsync_file(fd.get(), part);
  if (record.size && *record.size != received) {
    throw Error(ErrorCode::kDownloadIncomplete, "image " + record.id + " is " +
                                                    std::to_string(*record.size) + " bytes in Glance but " +
                                                    std::to_string(received) + " arrived");
  }
  return result;
}

// Glance may not have known the virtual size; the inspector does.
void check_room_for_conversion(const glance::ImageRecord& record, const image::Inspection& inspection,
                               const fs::path& directory, const CachePolicy& policy) {
  std::uint64_t needed = inspection.virtual_size + policy.reserved_bytes;
  std::uint64_t available = available_bytes(directory);
  if (available < needed) {
    throw Error(ErrorCode::kInsufficientSpace,
                "not enough free space in " + directory.string() + " to convert image " + record.id + ": " +
                    std::to_string(needed) + " bytes needed, " + std::to_string(available) + " available");
  }
}

BaseInfo describe(const glance::ImageRecord& record, std::uint64_t virtual_size,
                  const std::string& base_sha256) {
  BaseInfo info;
  info.image_id = record.id;
  info.name = record.name;
  info.disk_format = record.disk_format;
  info.container_format = record.container_format;
  info.source_size = record.size.value_or(0);
  info.virtual_size = virtual_size;
  info.os_hash_algo = record.os_hash_algo;
  info.os_hash_value = record.os_hash_value;
  info.checksum = record.checksum;
  info.base_sha256 = base_sha256;
  info.fetched_at = info.last_used_at = Clock::now();
  return info;
}

// The .info goes first, so a base never exists without one.
void publish_base(const glance::ImageRecord& record, const fs::path& temporary,
                  const std::string& base_sha256, const fs::path& base_path) {
  save_base_info(base_path, describe(record, kiln::file_size(temporary), base_sha256));
  publish_file(temporary, base_path);
}

void fsync_path(const fs::path& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  fsync_file(fd.get(), path);
}

}  // namespace

FetchOutcome fetch_base(const glance::GlanceClient& glance, const CachePolicy& policy,
                        const glance::ImageRecord& record, const fs::path& base_path,
                        const FetchProgress& progress) {
  TemporaryPath part(with_suffix(base_path, ".part"));
  TemporaryPath converted(with_suffix(base_path, ".converted"));
  std::error_code ignored;
  fs::remove(part.path(), ignored);  // leftovers of a crash: the lock says nobody owns them
  fs::remove(converted.path(), ignored);

  std::string qemu_format = image::qemu_format_for(record.disk_format).value_or("");
  bool raw = qemu_format == "raw";
  Verifier verifier(record, policy, raw);
  Download downloaded = download(glance, policy, record, part.path(), verifier, progress);
  FetchOutcome outcome{downloaded.network_bytes, verifier.check(downloaded.content_md5), downloaded.resumes};
  // The bytes are Glance's; now make sure they are what they claim to be and
  // name no other file, before any qemu tool opens them.
  image::Inspection inspection = image::inspect_file(part.path(), policy.inspector);
  image::require_safe(inspection, record.disk_format, record.id);

  if (raw) {
    publish_base(record, part.path(), outcome.base_sha256, base_path);
    part.keep();
    return outcome;
  }
  check_room_for_conversion(record, inspection, base_path.parent_path(), policy);
  image::convert_to_raw(part.path(), qemu_format, converted.path(), policy.conversion);
  fsync_path(converted.path());
  outcome.base_sha256 = hex_digest_of_file("sha256", converted.path().string());
  publish_base(record, converted.path(), outcome.base_sha256, base_path);
  converted.keep();
  return outcome;
}

}  // namespace kiln::cache
