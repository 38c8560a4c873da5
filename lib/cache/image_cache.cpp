#include "kiln/cache/image_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "fetch.h"
#include "lease_table.h"
#include "kiln/cache/base_info.h"
#include "kiln/cache/maintenance.h"
#include "kiln/image/converter.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/layout.h"

namespace kiln::cache {

namespace fs = std::filesystem;

namespace {

void check_usable(const glance::ImageRecord& record, const CachePolicy& policy) {
  if (record.status != "active") {
    throw Error(ErrorCode::kImageNotActive, "image " + record.id + " is not active (status " +
                                                (record.status.empty() ? "unknown" : record.status) +
                                                ")");
  }
  if (!policy.allowed_disk_formats.contains(record.disk_format) ||
      !image::qemu_format_for(record.disk_format)) {
    throw Error(ErrorCode::kImageFormatRefused,
                "image " + record.id + " has disk_format '" + record.disk_format +
                    "', which this host does not accept");
  }
  if (!policy.allowed_container_formats.contains(record.container_format)) {
    throw Error(ErrorCode::kImageFormatRefused,
                "image " + record.id + " has container_format '" + record.container_format +
                    "', which this host does not accept");
  }
}

// Failure records (layout::failure_record_path) let those who waited on a
// failed download share its error.

// Best effort: on a full or read-only filesystem the record cannot be
// written, and that must never replace the failure the caller is told about.
void record_failure(const fs::path& failure_path, const Error& error) noexcept {
  try {
    nlohmann::json record = {{"code", error.code_name()}, {"message", error.what()}};
    atomic_write_file(failure_path, record.dump() + "\n");
  } catch (const std::exception&) {
  }
}

// Throws the failure recorded after `since` (by the holder we waited for), if any.
void rethrow_failure_since(const fs::path& failure_path, Clock::time_point since) {
  struct stat info {};
  if (::stat(failure_path.c_str(), &info) != 0) return;
  auto written = Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(info.st_mtim.tv_sec) + std::chrono::nanoseconds(info.st_mtim.tv_nsec)));
  if (written < since) return;
  auto record = nlohmann::json::parse(read_file(failure_path), nullptr, false);
  if (!record.is_object() || !record["code"].is_string() || !record["message"].is_string()) return;
  auto code = code_from_name(record["code"].get<std::string>());
  if (code) throw Error(*code, record["message"].get<std::string>());
}

// Aging works in hours (a day by default), so the last use is rewritten at
// most once a minute: a burst of boots from one image pays for no .info
// write (two fsyncs) after the first.
void record_use(const fs::path& base_path, BaseInfo& info, Clock::time_point now) {
  constexpr auto kResolution = std::chrono::minutes(1);
  touch_base(base_path);  // as nova does: a base something was built on is young
  if (now - info.last_used_at < kResolution && now >= info.last_used_at) return;
  info.last_used_at = now;
  save_base_info(base_path, info);
}

}  // namespace

std::string base_name_for(const std::string& image_id) { return layout::image_base_name(image_id); }

// The last active, usable record Glance gave for each image, with when it
// was asked for; the questions to Glance still in flight (their answers go
// to all who asked); and the records of the downloads in progress.
struct ImageCache::RememberedRecords {
  using Time = std::chrono::steady_clock::time_point;
  // A record older than this is forgotten even with no TTL: a boot queued
  // longer than that asks Glance again, and the map stays small.
  static constexpr std::chrono::minutes kForgetAfter{10};

  explicit RememberedRecords(std::chrono::seconds ttl) : ttl(ttl) {}

  const std::chrono::seconds ttl;  // CachePolicy::image_record_ttl
  std::mutex mutex;
  std::map<std::string, std::pair<Time, glance::ImageRecord>> by_id;
  std::map<std::string, std::shared_future<glance::ImageRecord>> in_flight;
  std::map<std::string, glance::ImageRecord> downloading;

  // REQUIRES: mutex held.
  void remember(const std::string& image_id, Time asked_at, const glance::ImageRecord& record) {
    auto keep = std::max<std::chrono::steady_clock::duration>(ttl, kForgetAfter);
    std::erase_if(by_id, [&](const auto& entry) { return asked_at - entry.second.first > keep; });
    by_id.insert_or_assign(image_id, std::pair{asked_at, record});
  }

  // While a base is downloaded, lookups of its image get the record the
  // download is verified against (as fresh as the bytes their boots will
  // use) instead of asking Glance again. A boot accepted during the download
  // but queued behind it (kilnd runs max_concurrent_builds at a time) gets
  // that record too once it is verified: remembered as of the download's
  // end, so which boots share it depends on when they arrived, not on when a
  // worker got to them. One download per image at a time: it runs under the
  // base's lock.
  class Download {
   public:
    Download(RememberedRecords& records, const glance::ImageRecord& record) : records_(records), image_id_(record.id) {
      std::lock_guard lock(records_.mutex);
      records_.downloading.insert_or_assign(image_id_, record);
    }
    ~Download() {
      std::lock_guard lock(records_.mutex);
      auto downloading = records_.downloading.find(image_id_);
      if (verified_) records_.remember(image_id_, std::chrono::steady_clock::now(), downloading->second);
      records_.downloading.erase(downloading);
    }
    // The bytes were verified against the record and published.
    void verified() { verified_ = true; }
    Download(const Download&) = delete;
    Download& operator=(const Download&) = delete;

   private:
    RememberedRecords& records_;
    std::string image_id_;
    bool verified_ = false;
  };
};

ImageCache::ImageCache(fs::path instances_path, const glance::GlanceClient& glance, CachePolicy policy)
    : instances_path_(std::move(instances_path)),
      glance_(glance),
      policy_(std::move(policy)),
      records_(std::make_shared<RememberedRecords>(policy_.image_record_ttl)) {}

fs::path ImageCache::lock_path(const std::string& base_name) const {
  return layout::base_lock_path(instances_path_, base_name);
}

// Single flight: a boot storm asks Glance once per image, not once per boot.
// Sharing an answer that is being given is always safe (every asker would
// have got the same one), and so is an answer to a question asked after the
// boot arrived; anything older is image_record_ttl's call.
glance::ImageRecord ImageCache::lookup(const std::string& image_id,
                                       std::optional<std::chrono::steady_clock::time_point> received_at) const {
  auto now = std::chrono::steady_clock::now();
  std::promise<glance::ImageRecord> answer;
  std::optional<std::shared_future<glance::ImageRecord>> asked_already;
  {
    std::lock_guard lock(records_->mutex);
    auto remembered = records_->by_id.find(image_id);
    if (remembered != records_->by_id.end()) {
      auto asked_at = remembered->second.first;
      bool fresh_enough = received_at && asked_at >= *received_at;
      bool within_ttl = policy_.image_record_ttl.count() > 0 && now - asked_at < policy_.image_record_ttl;
      if (fresh_enough || within_ttl) return remembered->second.second;
    }
    auto downloading = records_->downloading.find(image_id);
    if (downloading != records_->downloading.end()) return downloading->second;
    auto asked = records_->in_flight.find(image_id);
    if (asked != records_->in_flight.end()) {
      asked_already = asked->second;
    } else {
      records_->in_flight.emplace(image_id, answer.get_future().share());
    }
  }
  if (asked_already) return asked_already->get();  // the first asker's record, or its error rethrown
  try {
    glance::ImageRecord record = glance_.get_image(image_id);
    check_usable(record, policy_);
    std::lock_guard lock(records_->mutex);
    records_->remember(image_id, now, record);
    records_->in_flight.erase(image_id);
    answer.set_value(record);
    return record;
  } catch (...) {
    std::lock_guard lock(records_->mutex);
    // A refusal (deactivated, deleted) must not leave an older record for
    // the boots that arrived after it was given.
    records_->by_id.erase(image_id);
    records_->in_flight.erase(image_id);
    answer.set_exception(std::current_exception());
    throw;
  }
}

// The offered record describes the bytes the cached base was made from:
// Glance's digests of them are what the .info recorded when it was fetched.
bool describes_cached_base(const glance::ImageRecord& offered, const BaseInfo& info) {
  if (info.image_id != offered.id || info.disk_format != offered.disk_format ||
      info.container_format != offered.container_format || !offered.size || info.source_size != *offered.size) {
    return false;
  }
  if (!info.os_hash_value.empty() || !offered.os_hash_value.empty()) {
    return info.os_hash_algo == offered.os_hash_algo && info.os_hash_value == offered.os_hash_value;
  }
  return !info.checksum.empty() && info.checksum == offered.checksum;
}

glance::ImageRecord ImageCache::lookup(const glance::ImageRecord& offered,
                                       std::optional<std::chrono::steady_clock::time_point> received_at) const {
  // Read without the base's lock: an .info only ever describes the bytes
  // of its image id, and acquire() checks the base again under the lock.
  std::optional<BaseInfo> info = load_base_info(base_directory() / base_name_for(offered.id));
  if (!info || !describes_cached_base(offered, *info)) return lookup(offered.id, received_at);
  check_usable(offered, policy_);
  glance::ImageRecord record = offered;
  record.offered = true;
  return record;
}

// Room for the download plus, when it must be converted, the raw result
// (its virtual size; the download's size when Glance does not know it),
// plus the reserve. Conservative: the raw output is sparse. When that cannot
// fit even with every evictable base gone, nothing is evicted: a request
// that fails anyway must not empty the cache on its way out.
void ImageCache::ensure_space(const glance::ImageRecord& record) const {
  std::uint64_t size = record.size.value_or(0);
  bool converts = image::qemu_format_for(record.disk_format) != "raw";
  std::uint64_t needed = size + (converts ? record.virtual_size.value_or(size) : 0) + policy_.reserved_bytes;
  std::uint64_t available = available_bytes(base_directory());
  if (available >= needed) return;
  RoomResult room = make_room(instances_path_, needed, policy_, Clock::now());
  available = available_bytes(base_directory());
  if (available < needed) {
    throw Error(ErrorCode::kInsufficientSpace,
                "not enough free space in " + base_directory().string() + " for image " + record.id +
                    ": " + std::to_string(needed) + " bytes needed (download, conversion and reserve), " +
                    std::to_string(available) + " available" +
                    (room.fits ? "" : " and " + std::to_string(room.evictable_bytes) +
                                          " more in unused bases; nothing was evicted"));
  }
}

BaseLease ImageCache::acquire(const glance::ImageRecord& given, const FetchProgress& progress) const {
  check_usable(given, policy_);
  glance::ImageRecord record = given;
  std::string name = base_name_for(record.id);
  fs::path base_path = base_directory() / name;
  std::error_code error;
  fs::create_directories(base_directory(), error);
  if (error) throw_io_error("cannot create " + base_directory().string(), error.value());

  Clock::time_point waiting_since = Clock::now();
  std::shared_ptr<void> lock = take_base_lock(lock_path(name), policy_.lock_timeout);
  std::optional<BaseInfo> info = load_base_info(base_path);
  FetchOutcome outcome;
  // A base without a valid .info, or whose file is not what its .info says
  // (a planted symlink, a truncated copy), cannot be trusted: fetch it again
  // over it (publishing replaces the link itself, never its target) unless
  // it is another tool's raw base that proves to be exactly Glance's image.
  if (!info || !is_regular_file_of_size(base_path, info->virtual_size)) {
    rethrow_failure_since(layout::failure_record_path(instances_path_, name), waiting_since);
    // Whatever is downloaded is verified against Glance's own digests,
    // never against a caller's copy of them.
    if (record.offered) record = lookup(record.id);
    RememberedRecords::Download download(*records_, record);
    try {
      std::optional<FetchOutcome> adopted;
      if (!info) adopted = adopt_foreign_base(policy_, record, base_path);
      if (!adopted) ensure_space(record);
      outcome = adopted ? *adopted : fetch_base(glance_, policy_, record, base_path, progress);
      download.verified();
    } catch (const Error& failure) {
      record_failure(layout::failure_record_path(instances_path_, name), failure);
      throw;
    }
    fs::remove(layout::failure_record_path(instances_path_, name), error);
    info = load_base_info(base_path);
    if (!info) throw Error(ErrorCode::kIoError, "the .info of " + base_path.string() + " vanished");
  }
  record_use(base_path, *info, Clock::now());
  BaseImage base{base_path, kiln::file_size(base_path), record, outcome.downloaded_bytes, outcome.resumes,
                 std::move(outcome.phases)};
  return BaseLease{std::move(base), std::move(lock)};
}

void to_json(nlohmann::json& out, const BaseImage& base) {
  nlohmann::json phases = nlohmann::json::object();
  for (const auto& phase : base.phases) phases[phase.name] = phase.duration.count() / 1000.0;
  out = {{"path", base.path.string()},
         {"image_id", base.record.id},
         {"image_name", base.record.name},
         {"disk_format", base.record.disk_format},
         {"virtual_size", base.virtual_size},
         {"downloaded_bytes", base.downloaded_bytes},
         {"resumes", base.resumes},
         {"phases_ms", phases}};
}

}  // namespace kiln::cache
