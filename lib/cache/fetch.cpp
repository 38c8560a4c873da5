#include "fetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "kiln/cache/base_info.h"
#include "kiln/image/converter.h"
#include "kiln/image/inspector.h"
#include "kiln/image/qcow2_stream.h"
#include "kiln/image/second_opinion.h"
#include "kiln/util/chunk_pipeline.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/layout.h"
#include "kiln/util/sparse_writer.h"

namespace kiln::cache {

namespace fs = std::filesystem;

namespace {

// The digests (and signature) one download is checked against, fed as bytes stream.
class Verifier {
 public:
  Verifier(const glance::ImageRecord& record, const CachePolicy& policy) : record_(record) {
    // Built before any byte is fetched: a bad certificate refuses the image up front.
    if (policy.verify_signatures) {
      signature_ = image::make_signature_verifier(record.properties, policy.signatures, record.id);
    }
    if (!record.os_hash_value.empty()) {
      os_hash_.emplace(record.os_hash_algo.empty() ? "sha512" : record.os_hash_algo);
    }
    // md5 only as python-glanceclient uses it: when there is no os_hash (or when configured).
    if (!os_hash_ || (policy.verify_md5_always && !record.checksum.empty())) md5_.emplace("md5");
  }

  void update(std::span<const char> data) {
    update_os_hash(data);
    update_others(data);
  }

  // The os_hash (sha512, the costliest) is fed apart from the others, so that
  // a download can give it a thread of its own.
  bool has_os_hash() const { return os_hash_.has_value(); }
  void update_os_hash(std::span<const char> data) {
    if (os_hash_) os_hash_->update(data);
  }
  void update_others(std::span<const char> data) {
    if (md5_) md5_->update(data);
    if (signature_) signature_->update(data);
  }

  // Throws kChecksumMismatch unless every digest Glance gave matches.
  void check(const std::string& content_md5) {
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
  std::optional<image::SignatureVerifier> signature_;
};

// Times the phases of one fetch (FetchOutcome::phases), each from the end of the previous one.
class PhaseClock {
 public:
  void mark(std::string name) {
    auto now = std::chrono::steady_clock::now();
    phases_.push_back({std::move(name), std::chrono::duration_cast<std::chrono::microseconds>(now - last_)});
    last_ = now;
  }
  std::vector<FetchPhase> take() { return std::move(phases_); }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::vector<FetchPhase> phases_;
};

bool resumable(const Error& error) {
  return error.code() == ErrorCode::kDownloadIncomplete || error.code() == ErrorCode::kHttpError ||
         error.code() == ErrorCode::kGlanceError;
}

struct Download {
  std::uint64_t network_bytes = 0;
  std::string content_md5;
  unsigned resumes = 0;
  UniqueFd part;  // open, so that it can be unlinked now and freed later
};

// The most bytes a download may bring (nullopt: no bound): what Glance
// recorded (0 included: then not one byte), else [image_cache]
// max_download_bytes (0 there means no bound).
std::optional<std::uint64_t> download_bound(const glance::ImageRecord& record, const CachePolicy& policy) {
  if (record.size) return *record.size;
  if (policy.max_download_bytes != 0) return policy.max_download_bytes;
  return std::nullopt;
}

Error too_large(const glance::ImageRecord& record, std::uint64_t bound) {
  std::string why = record.size ? "the " + std::to_string(bound) + " bytes Glance recorded for it"
                                : "[image_cache] max_download_bytes (" + std::to_string(bound) +
                                      ") and Glance recorded no size";
  return Error(ErrorCode::kImageTooLarge, "image " + record.id + " sent more than " + why + ": download stopped");
}

Error incomplete(const glance::ImageRecord& record, std::uint64_t received) {
  return Error(ErrorCode::kDownloadIncomplete, "image " + record.id + " is " + std::to_string(*record.size) +
                                                   " bytes in Glance but " + std::to_string(received) + " arrived");
}

// Streams the image into `part`, resuming from the bytes already written
// (each resume asks the next Glance endpoint first).
// Not a byte past download_bound() reaches the .part. With `durable` (the
// .part is the base: a raw image) writeback starts as bytes arrive and the
// .part is fsync'd at the end; without it (the .part will be converted and
// thrown away) it is never forced to disk.
Download download(const glance::GlanceClient& glance, const CachePolicy& policy,
                  const glance::ImageRecord& record, const fs::path& part, Verifier& verifier,
                  DataDigest* base_digest, bool durable, image::Qcow2Stream* stream,
                  const FetchProgress& progress, PhaseClock& clock) {
  const std::optional<std::uint64_t> bound = download_bound(record, policy);
  Download result;
  result.part = open_file(part, O_WRONLY | O_CREAT | O_EXCL, 0644);
  SparseWriter writer(result.part.get(), part, {.digest = base_digest, .write_behind = durable});
  // The os_hash on a thread of its own, fed as bytes arrive (it sets the
  // pace: sha512 runs at 0.6-1.25 GB/s on one core); the writer, with the
  // cheaper digests, on another.
  std::vector<ChunkPipeline::Consumer> consumers;
  if (verifier.has_os_hash()) consumers.push_back([&](std::span<const char> chunk) { verifier.update_os_hash(chunk); });
  bool first_chunk = true;
  consumers.push_back([&](std::span<const char> chunk) {
    writer.write(chunk);
    verifier.update_others(chunk);
    // Converted as it arrives, on this thread (the sha512's sets the pace).
    if (stream) stream->feed(chunk);
    if (first_chunk) KILN_FAILPOINT("fetch.download.first_chunk_written");
    first_chunk = false;
  });
  ChunkPipeline pipeline(std::move(consumers));
  std::uint64_t received = 0;  // bytes handed to the pipeline, in image order
  auto backoff = policy.retry_backoff;
  // The Glance client reports any failure after the first byte as an
  // incomplete download (resumable); this keeps the real reason of a failure
  // that is ours (a bound passed, a full or read-only disk), which no retry
  // to Glance can cure.
  std::optional<Error> refused;
  for (unsigned attempt = 0;; ++attempt) {
    try {
      auto answer = glance.download(record.id, received, [&](std::span<const char> data) {
        if (bound && data.size() > *bound - std::min(*bound, received)) {
          refused = too_large(record, *bound);
          throw *refused;
        }
        try {
          pipeline.push(data);  // rethrows the writer's error (ENOSPC, EROFS, EFBIG)
        } catch (const Error& local) {
          refused = local;
          throw;
        }
        received += data.size();
        result.network_bytes += data.size();
        if (progress) progress(received, record.size);
      }, attempt);
      result.content_md5 = answer.content_md5;
      // A body that ends cleanly but short (no Content-Length: it ends
      // where the connection closed) is a broken transfer like any other.
      if (record.size && received < *record.size) throw incomplete(record, received);
      break;
    } catch (const Error& error) {
      if (refused) throw *refused;
      if (!resumable(error) || attempt >= policy.download_retries) throw;
      ++result.resumes;
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }
  pipeline.finish();
  writer.finish();
  clock.mark("download");
  if (stream) {
    // The clusters whose table came after them are read back now that the
    // .part is whole (the writer has flushed it).
    UniqueFd whole = open_file(part, O_RDONLY | O_NOFOLLOW);
    stream->finish(whole.get());
    clock.mark("stream_finish");
  }
  if (durable) {
    fsync_file(result.part.get(), part);
    clock.mark("fsync_part");
  }
  return result;
}

// The first two walls: the native inspector refuses, then qemu-img info
// (sandboxed) must read the image as the inspector did. Returns the virtual
// size they agreed on, which bounds the conversion; nothing only when a test
// turned both walls off.
std::optional<std::uint64_t> check_image(const glance::ImageRecord& record, const CachePolicy& policy,
                                         const std::string& qemu_format, const fs::path& part) {
  std::optional<image::Inspection> inspection;
  if (policy.inspect_images) {
    inspection = image::inspect_file(part, policy.inspector);
    image::require_safe(*inspection, record.disk_format, record.id);
  }
  if (!policy.ask_qemu_second_opinion) {
    if (!inspection) return std::nullopt;
    return image::qemu_virtual_size(inspection->virtual_size);
  }
  return image::require_qemu_agrees(part, inspection, qemu_format, record.id).virtual_size;
}

// Glance may not have known the virtual size; the inspector does.
void check_room_for_conversion(const glance::ImageRecord& record, std::uint64_t virtual_size,
                               const fs::path& directory, const CachePolicy& policy) {
  std::uint64_t needed = virtual_size + policy.reserved_bytes;
  std::uint64_t available = available_bytes(directory);
  if (available < needed) {
    throw Error(ErrorCode::kInsufficientSpace,
                "not enough free space in " + directory.string() + " to convert image " + record.id + ": " +
                    std::to_string(needed) + " bytes needed, " + std::to_string(available) + " available");
  }
}

BaseInfo describe(const glance::ImageRecord& record, std::uint64_t virtual_size,
                  const std::string& base_digest) {
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
  info.base_digest = base_digest;
  info.fetched_at = info.last_used_at = Clock::now();
  return info;
}

// The .info goes first, so a base never exists without one.
void publish_base(const glance::ImageRecord& record, const fs::path& temporary,
                  const std::string& base_digest, const fs::path& base_path) {
  KILN_FAILPOINT("fetch.publish.before_info");
  save_base_info(base_path, describe(record, kiln::file_size(temporary), base_digest));
  KILN_FAILPOINT("fetch.publish.info_written");
  publish_file(temporary, base_path);
  KILN_FAILPOINT("fetch.publish.renamed");
}

// A conversion killed with kiln leaves its private directory behind
// (SandboxOutput: ".<base>.converted.sandbox-XXXXXX"); the lock says it is ours.
void remove_sandbox_leftovers(const fs::path& converted) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(converted.parent_path(), error)) {
    auto parsed = layout::parse(layout::Place::kBaseDirectory, entry.path().filename().string());
    if (parsed && parsed->kind == layout::Kind::kConversionSandbox &&
        layout::converted_path(parsed->subject) == converted.filename()) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    }
  }
}

// Unlinks `path` at once and frees its blocks on a detached thread that
// closes the last descriptor. Nothing is left under any name even if the
// process dies meanwhile (the kernel frees an unlinked file at exit).
void discard_in_background(TemporaryPath path, UniqueFd last_descriptor) {
  if (::unlink(path.path().c_str()) == 0) path.keep();  // else the TemporaryPath removes it
  try {
    std::thread([fd = std::move(last_descriptor)]() mutable { fd = UniqueFd(); }).detach();
  } catch (const std::system_error&) {
    // No thread to spare: close it here.
  }
}

void fsync_path(const fs::path& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  fsync_file(fd.get(), path);
}

// Feeds every byte of `path` (not followed if a symlink) to the verifier and
// the base digest; returns the digest.
std::string verify_file(const fs::path& path, Verifier& verifier) {
  UniqueFd fd = open_file(path, O_RDONLY | O_NOFOLLOW);
  std::vector<char> buffer(1 << 20);  // a multiple of DataDigest::kBlock
  DataDigest digest;
  std::uint64_t offset = 0;
  std::size_t filled = 0;
  for (;;) {
    ssize_t count = ::read(fd.get(), buffer.data() + filled, buffer.size() - filled);
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) throw_io_error("cannot read " + path.string(), errno);
    std::span<const char> fresh(buffer.data() + filled, static_cast<std::size_t>(count));
    verifier.update(fresh);
    filled += fresh.size();
    if (count == 0 || filled == buffer.size()) {  // the digest takes whole blocks until the end
      digest.add(offset, std::span<const char>(buffer.data(), filled));
      offset += filled;
      filled = 0;
    }
    if (count == 0) return digest.hex_digest(offset);
  }
}

}  // namespace

std::optional<FetchOutcome> adopt_foreign_base(const CachePolicy& policy, const glance::ImageRecord& record,
                                               const fs::path& base_path) {
  if (image::qemu_format_for(record.disk_format) != "raw" || !record.size) return std::nullopt;
  if (record.os_hash_value.empty() && record.checksum.empty()) return std::nullopt;
  if (!is_regular_file_of_size(base_path, *record.size)) return std::nullopt;
  try {
    Verifier verifier(record, policy);
    FetchOutcome outcome{0, verify_file(base_path, verifier), 0, {}};
    verifier.check("");
    check_image(record, policy, "raw", base_path);
    save_base_info(base_path, describe(record, *record.size, outcome.base_digest));
    return outcome;
  } catch (const Error&) {
    // Whatever the file is, it is not provably this image: a download decides
    // (and reports the image's own error, if it has one).
    return std::nullopt;
  }
}

FetchOutcome fetch_base(const glance::GlanceClient& glance, const CachePolicy& policy,
                        const glance::ImageRecord& record, const fs::path& base_path,
                        const FetchProgress& progress) {
  TemporaryPath part(layout::part_path(base_path));
  TemporaryPath converted(layout::converted_path(base_path));
  std::error_code ignored;
  fs::remove(part.path(), ignored);  // leftovers of a crash: the lock says nobody owns them
  fs::remove(converted.path(), ignored);
  remove_sandbox_leftovers(converted.path());

  std::string qemu_format = image::qemu_format_for(record.disk_format).value_or("");
  bool raw = qemu_format == "raw";
  Verifier verifier(record, policy);
  PhaseClock clock;
  // A raw image is its own base: its digest is computed as it is written.
  std::optional<DataDigest> raw_digest;
  if (raw) raw_digest.emplace();
  KILN_FAILPOINT("fetch.download.before");
  // A qcow2 image is converted as it arrives when it is of the common kind
  // (image::Qcow2Stream gives up on anything else, and qemu-img converts it
  // after the checks, as before).
  std::optional<image::Qcow2Stream> stream;
  // Its data may fill the room ensure_space set aside for the conversion
  // (the virtual size Glance read, else the download's size), no more.
  if (qemu_format == "qcow2" && policy.stream_qcow2 && record.size) {
    stream.emplace(converted.path(), *record.size, record.virtual_size.value_or(*record.size),
                   policy.stream_compressed_qcow2);
  }
  Download downloaded = download(glance, policy, record, part.path(), verifier,
                                 raw_digest ? &*raw_digest : nullptr, /*durable=*/raw, stream ? &*stream : nullptr,
                                 progress, clock);
  KILN_FAILPOINT("fetch.download.done");
  verifier.check(downloaded.content_md5);
  FetchOutcome outcome{downloaded.network_bytes, "", downloaded.resumes, {}};
  if (raw_digest) outcome.base_digest = raw_digest->hex_digest(kiln::file_size(part.path()));
  clock.mark("verify");
  // The bytes are Glance's; now make sure they are what they claim to be and
  // name no other file, before any qemu tool opens them.
  std::optional<std::uint64_t> virtual_size = check_image(record, policy, qemu_format, part.path());
  clock.mark("inspect");

  if (raw) {
    publish_base(record, part.path(), outcome.base_digest, base_path);
    part.keep();
    clock.mark("publish");
    outcome.phases = clock.take();
    return outcome;
  }
  if (virtual_size) check_room_for_conversion(record, *virtual_size, base_path.parent_path(), policy);
  KILN_FAILPOINT("fetch.convert.before");
  // The streamed output is used only when the inspector and qemu-img read the
  // complete image as it did (the same virtual size); else it goes and
  // qemu-img converts, as for any image it gave up on.
  if (stream && !stream->failed() && virtual_size && stream->virtual_size() == virtual_size) {
    clock.mark("convert_streamed");
  } else {
    stream.reset();  // closes its output, if any
    fs::remove(converted.path(), ignored);
    image::convert_to_raw(part.path(), qemu_format, converted.path(), virtual_size, policy.conversion);
    clock.mark("convert");
  }
  KILN_FAILPOINT("fetch.convert.done");
  // The .part has served: its name goes now (the lock says nobody else uses
  // it), its blocks when the last descriptor closes, on a thread of its own:
  // freeing the extents of a large file takes ~0.1 s that nobody waits for.
  discard_in_background(std::move(part), std::move(downloaded.part));
  clock.mark("unlink_part");
  // The fsync that makes the output durable, while its data extents (mostly
  // still in the page cache) are read for the digest, unless the stream
  // computed it as it wrote.
  std::optional<std::string> streamed_digest;
  if (stream) streamed_digest = stream->take_digest();
  std::string digest;
  if (streamed_digest) {
    fsync_path(converted.path());
    digest = *streamed_digest;
  } else {
    auto synced = std::async(std::launch::async, [path = converted.path()] { fsync_path(path); });
    try {
      digest = data_digest_of_file(converted.path());
    } catch (...) {
      synced.wait();
      throw;
    }
    synced.get();
  }
  KILN_FAILPOINT("fetch.convert.synced");
  outcome.base_digest = digest;
  clock.mark("fsync_and_digest");
  publish_base(record, converted.path(), outcome.base_digest, base_path);
  converted.keep();
  clock.mark("publish");
  outcome.phases = clock.take();
  return outcome;
}

}  // namespace kiln::cache
