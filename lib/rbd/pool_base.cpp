#include "kiln/rbd/pool_base.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>
#include <nlohmann/json.hpp>
#include <utility>

#include "handles.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"

namespace kiln::rbd {

namespace {

constexpr const char* kLockName = "kiln-import";
constexpr std::size_t kChunk = 4 << 20;  // RBD's default object size: one write per object
constexpr std::size_t kWritesInFlight = 8;
constexpr auto kPollInterval = std::chrono::milliseconds(250);

std::string part_name(const std::string& name) { return name + std::string(layout::kPartSuffix); }

std::string epoch_seconds(std::chrono::system_clock::time_point time) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count());
}

bool is_published(const Pool& pool, const std::string& name) {
  try {
    SnapshotState state = pool.snapshot(name, std::string(kPoolBaseSnapshot));
    return state.exists && state.is_protected;
  } catch (const Error& error) {
    if (error.code() == ErrorCode::kNotFound) return false;
    throw;
  }
}

// The RADOS exclusive lock that makes one host the importer of a base. Held
// from acquire() to destruction; a thread renews it every third of its
// lifetime, and lost() says whether a renewal failed (the lock expired and
// may be someone else's now).
class ImportLock {
 public:
  ImportLock(Pool pool, std::string object) : pool_(std::move(pool)), object_(std::move(object)) {
    std::random_device random;
    cookie_ = std::to_string(::getpid()) + "-" + std::to_string(random()) + std::to_string(random());
  }
  ImportLock(const ImportLock&) = delete;
  ImportLock& operator=(const ImportLock&) = delete;
  ~ImportLock() {
    if (!renewer_.joinable()) return;
    renewer_.request_stop();
    renewer_.join();
    rados_unlock(pool_.handle(), object_.c_str(), kLockName, cookie_.c_str());  // nothing to do if it fails: it expires
  }

  // True when taken; false when another client holds it.
  bool try_acquire() {
    int result = lock(0);
    if (result == -EBUSY || result == -EEXIST) return false;
    if (result < 0) fail("lock " + pool_.name() + "/" + object_, result);
    renewer_ = std::jthread([this](std::stop_token stop) { renew_until(stop); });
    return true;
  }

  bool lost() const { return lost_; }

 private:
  int lock(std::uint8_t flags) {
    timeval lifetime{static_cast<time_t>(kImportLockLifetime.count()), 0};
    return rados_lock_exclusive(pool_.handle(), object_.c_str(), kLockName, cookie_.c_str(),
                                "kiln imports this base", &lifetime, flags);
  }

  void renew_until(std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any wake;
    std::unique_lock guard(mutex);
    for (;;) {
      wake.wait_for(guard, stop, kImportLockLifetime / 3, [] { return false; });
      if (stop.stop_requested()) return;
      if (lock(LIBRADOS_LOCK_FLAG_MUST_RENEW) < 0) lost_ = true;
    }
  }

  Pool pool_;
  std::string object_;
  std::string cookie_;
  std::atomic<bool> lost_{false};
  std::jthread renewer_;
};

// Asynchronous writes of up to kWritesInFlight chunks; the destructor waits
// for every write still in flight, so no buffer is freed under librbd.
class ChunkWriter {
 public:
  ChunkWriter(rbd_image_t image, std::string spec) : image_(image), spec_(std::move(spec)) {
    for (Slot& slot : slots_) slot.buffer.resize(kChunk);
  }
  ChunkWriter(const ChunkWriter&) = delete;
  ChunkWriter& operator=(const ChunkWriter&) = delete;
  ~ChunkWriter() {
    for (Slot& slot : slots_) {
      if (slot.completion) {
        rbd_aio_wait_for_complete(slot.completion);
        rbd_aio_release(slot.completion);
      }
    }
  }

  // A buffer to fill for the next write (after the write that used it last has finished).
  char* next_buffer() {
    Slot& slot = slots_[next_];
    finish(slot);
    return slot.buffer.data();
  }

  // Writes what next_buffer() was filled with.
  void write(std::uint64_t offset, std::size_t length) {
    Slot& slot = slots_[next_];
    next_ = (next_ + 1) % slots_.size();
    int result = rbd_aio_create_completion(nullptr, nullptr, &slot.completion);
    if (result < 0) fail("write to RBD image " + spec_, result);
    slot.offset = offset;
    result = rbd_aio_write(image_, offset, length, slot.buffer.data(), slot.completion);
    if (result < 0) {
      rbd_aio_release(std::exchange(slot.completion, nullptr));
      fail("write to RBD image " + spec_, result);
    }
    written_ += length;
  }

  // Waits for every write; throws for the first that failed.
  std::uint64_t finish_all() {
    for (Slot& slot : slots_) finish(slot);
    return written_;
  }

 private:
  struct Slot {
    std::vector<char> buffer;
    rbd_completion_t completion = nullptr;
    std::uint64_t offset = 0;
  };

  void finish(Slot& slot) {
    if (!slot.completion) return;
    rbd_aio_wait_for_complete(slot.completion);
    auto result = rbd_aio_get_return_value(slot.completion);
    rbd_aio_release(std::exchange(slot.completion, nullptr));
    if (result < 0) fail("write at byte " + std::to_string(slot.offset) + " of RBD image " + spec_,
                         static_cast<int>(result));
  }

  rbd_image_t image_;
  std::string spec_;
  std::array<Slot, kWritesInFlight> slots_;
  std::size_t next_ = 0;
  std::uint64_t written_ = 0;
};

void read_exactly(int fd, char* buffer, std::size_t length, std::uint64_t offset, const std::filesystem::path& file) {
  for (std::size_t done = 0; done < length;) {
    ssize_t got = ::pread(fd, buffer + done, length - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw_io_error("cannot read " + file.string(), errno);
    if (got == 0) throw Error(ErrorCode::kIoError, file.string() + " ended at byte " + std::to_string(offset + done));
    done += static_cast<std::size_t>(got);
  }
}

// Copies the data extents of `fd` (its holes and zero chunks left out) into the image.
std::uint64_t copy_data(int fd, std::uint64_t size, const std::filesystem::path& file, rbd_image_t image,
                        const std::string& spec) {
  ChunkWriter writer(image, spec);
  std::uint64_t position = 0;
  while (position < size) {
    off_t data = ::lseek(fd, static_cast<off_t>(position), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0) throw_io_error("cannot find the data of " + file.string(), errno);
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw_io_error("cannot find the data of " + file.string(), errno);
    for (auto offset = static_cast<std::uint64_t>(data); offset < static_cast<std::uint64_t>(hole);) {
      std::uint64_t end = std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), (offset / kChunk + 1) * kChunk);
      auto length = static_cast<std::size_t>(end - offset);
      char* buffer = writer.next_buffer();
      read_exactly(fd, buffer, length, offset, file);
      if (!all_zero({buffer, length})) writer.write(offset, length);
      offset = end;
    }
    position = static_cast<std::uint64_t>(hole);
  }
  return writer.finish_all();
}

// Removes `name` with its snapshots (unprotected first): an import cut short.
void remove_with_snapshots(Pool& pool, const std::string& name) {
  std::string spec = pool.name() + "/" + name;
  try {
    OpenImage image(pool.handle(), pool.name(), name, false);
    std::vector<rbd_snap_info_t> snaps(8);
    int max = static_cast<int>(snaps.size());
    int count = 0;
    while ((count = rbd_snap_list(image.get(), snaps.data(), &max)) == -ERANGE) snaps.resize(static_cast<std::size_t>(max));
    if (count < 0) fail("snapshots of RBD image " + spec, count);
    std::vector<std::string> names;
    for (int i = 0; i < count; ++i) names.emplace_back(snaps[i].name);
    rbd_snap_list_end(snaps.data());
    for (const std::string& snap : names) {
      int is_protected = 0;
      bool unprotected = false;
      if (rbd_snap_is_protected(image.get(), snap.c_str(), &is_protected) == 0 && is_protected) {
        int result = rbd_snap_unprotect(image.get(), snap.c_str());
        if (result == -EBUSY) throw Error(ErrorCode::kConflict, "RBD image " + spec + "@" + snap + " has clones");
        if (result < 0) fail("unprotect " + spec + "@" + snap, result);
        unprotected = true;
      }
      int result = rbd_snap_remove(image.get(), snap.c_str());
      if (result < 0) {
        // Protected again, so that a base that stays is still a published base
        // (an unprotected "snap" would make the next boot import over it).
        if (unprotected) rbd_snap_protect(image.get(), snap.c_str());
        fail("remove snapshot " + spec + "@" + snap, result);
      }
    }
  } catch (const Error& error) {
    if (error.code() == ErrorCode::kNotFound) return;
    throw;
  }
  pool.remove(name);
}

// Writes `file` into "<name>.part", snapshots, protects and renames it to `name`.
PoolBase import(Pool& pool, const std::string& name, const std::filesystem::path& file,
                const std::map<std::string, std::string>& metadata, const ImportLock& lock) {
  std::string part = part_name(name);
  std::string spec = pool.name() + "/" + part;
  remove_with_snapshots(pool, part);  // an earlier import cut short
  // An image under the final name without its protected snapshot (we hold
  // the lock, and the caller saw it unpublished) is a removal that failed
  // after the snapshot went: no clone can hang on it, and left there it
  // would make every import's rename fail.
  if (pool.image_exists(name)) remove_with_snapshots(pool, name);
  UniqueFd fd = open_file(file, O_RDONLY);
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) throw_io_error("cannot stat " + file.string(), errno);
  auto size = static_cast<std::uint64_t>(status.st_size);
  rbd_image_options_t options = nullptr;
  rbd_image_options_create(&options);
  int result = rbd_create4(pool.handle(), part.c_str(), size, options);
  rbd_image_options_destroy(options);
  if (result < 0) fail("create RBD image " + spec, result);
  PoolBase base;
  auto started = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  };
  try {
    OpenImage image(pool.handle(), pool.name(), part, false);
    base.written_bytes = copy_data(fd.get(), size, file, image.get(), spec);
    std::map<std::string, std::string> keys = metadata;
    keys[kImportedAtKey] = epoch_seconds(std::chrono::system_clock::now());
    for (const auto& [key, value] : keys) {
      result = rbd_metadata_set(image.get(), key.c_str(), value.c_str());
      if (result < 0) fail("set " + key + " on RBD image " + spec, result);
    }
    if ((result = rbd_flush(image.get())) < 0) fail("flush RBD image " + spec, result);
    KILN_FAILPOINT("rbd.pool_base.part_written");
    base.write_time = since(started);
    started = std::chrono::steady_clock::now();
    const std::string snapshot(kPoolBaseSnapshot);
    if ((result = rbd_snap_create(image.get(), snapshot.c_str())) < 0) fail("snapshot RBD image " + spec, result);
    if ((result = rbd_snap_protect(image.get(), snapshot.c_str())) < 0) fail("protect " + spec + "@snap", result);
    KILN_FAILPOINT("rbd.pool_base.protected");
  } catch (...) {
    try {
      remove_with_snapshots(pool, part);
    } catch (const Error&) {
      // The import's own failure is the one to report; the next importer removes the .part.
    }
    throw;
  }
  if (lock.lost()) {
    throw Error(ErrorCode::kRbdError, "the import lock on " + pool.name() + "/" + name +
                                          ".lock expired during the import (Ceph unreachable for " +
                                          std::to_string(kImportLockLifetime.count()) + " s): not published");
  }
  result = rbd_rename(pool.handle(), part.c_str(), name.c_str());
  if (result < 0) fail("rename RBD image " + spec + " to " + name, result);
  KILN_FAILPOINT("rbd.pool_base.published");  // the import lock still held
  base.publish_time = since(started);
  base.imported = true;
  base.size_bytes = size;
  return base;
}

// The kind of base the local name after kPoolBasePrefix is (kiln/util/layout's names of _base).
std::string kind_of(std::string_view name) {
  auto parsed = layout::parse(layout::Place::kBaseDirectory, std::string(name.substr(kPoolBasePrefix.size())));
  if (!parsed) return "other";
  switch (parsed->kind) {
    case layout::Kind::kImageBase: return "image";
    case layout::Kind::kSwapBase: return "swap";
    case layout::Kind::kEphemeralBase: return "ephemeral";
    default: return "other";
  }
}

// A metadata value of the open image; nullopt when the key is not set.
std::optional<std::string> metadata_value(rbd_image_t image, const char* key) {
  std::vector<char> value(64);
  std::size_t length = value.size();
  int result = 0;
  while ((result = rbd_metadata_get(image, key, value.data(), &length)) == -ERANGE) value.resize(length);
  if (result < 0) return std::nullopt;
  return std::string(value.data(), strnlen(value.data(), value.size()));
}

std::optional<std::chrono::system_clock::time_point> parse_epoch_seconds(const std::string& text) {
  long long seconds = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (error != std::errc() || end != text.data() + text.size() || seconds < 0) return std::nullopt;
  return std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
}

// As kiln/cache's format_time writes times (that module is not this one's to use).
std::string format_utc(std::chrono::system_clock::time_point time) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// Sets kLastUsedKey on the base's head (metadata is the image's, whatever
// snapshot a reader opens).
void mark_used(Pool& pool, const std::string& name, std::chrono::system_clock::time_point now) {
  OpenImage image(pool.handle(), pool.name(), name, false);
  int result = rbd_metadata_set(image.get(), kLastUsedKey, epoch_seconds(now).c_str());
  if (result < 0) fail("set " + std::string(kLastUsedKey) + " on RBD image " + pool.name() + "/" + name, result);
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> PoolBaseInfo::last_activity() const {
  if (imported_at && last_used) return std::max(*imported_at, *last_used);
  return imported_at ? imported_at : last_used;
}

std::string pool_base_name(std::string_view local_base_name) {
  return std::string(kPoolBasePrefix) + std::string(local_base_name);
}

PoolBase ensure_pool_base(const Cluster& cluster, const std::string& pool_name, const std::string& name,
                          const std::function<LocalFile()>& local_file, std::chrono::seconds wait_limit) {
  Pool pool = cluster.open_pool(pool_name);
  auto published = [&](PoolBase base) {
    if (!base.imported) mark_used(pool, name, std::chrono::system_clock::now());
    base.location = Location{cluster.fsid(), pool_name, name, std::string(kPoolBaseSnapshot)};
    if (base.size_bytes == 0) base.size_bytes = pool.snapshot(name, base.location.snapshot).size_bytes;
    return base;
  };
  auto started = std::chrono::steady_clock::now();
  auto waited = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  };
  ImportLock lock(cluster.open_pool(pool_name), name + ".lock");
  for (;;) {
    if (is_published(pool, name)) {
      PoolBase base;
      base.waited = waited();
      return published(base);
    }
    if (lock.try_acquire()) break;
    if (waited() > wait_limit) {
      throw Error(ErrorCode::kRbdError, "another host has been importing RBD base " + pool_name + "/" + name +
                                            " for more than " + std::to_string(wait_limit.count()) + " s");
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  // Ours now; another host may have published it just before.
  PoolBase base;
  base.waited = waited();
  if (!is_published(pool, name)) {
    LocalFile file = local_file();
    PoolBase written = import(pool, name, file.path, file.metadata, lock);
    written.waited = base.waited;
    base = written;
  }
  return published(base);
}

std::vector<PoolBaseInfo> list_pool_bases(const Pool& pool) {
  std::vector<PoolBaseInfo> bases;
  const std::string snapshot(kPoolBaseSnapshot);
  for (const ImageInfo& image : pool.list()) {
    if (image.name.rfind(kPoolBasePrefix, 0) != 0 || image.name.ends_with(layout::kPartSuffix)) continue;
    PoolBaseInfo info;
    info.name = image.name;
    info.pool = pool.name();
    info.size_bytes = image.size_bytes;
    info.kind = kind_of(image.name);
    try {
      OpenImage open(pool.handle(), pool.name(), image.name, true, snapshot.c_str());
      info.image_id = metadata_value(open.get(), kImageIdKey).value_or("");
      if (auto imported_at = metadata_value(open.get(), kImportedAtKey)) info.imported_at = parse_epoch_seconds(*imported_at);
      if (auto last_used = metadata_value(open.get(), kLastUsedKey)) info.last_used = parse_epoch_seconds(*last_used);
      std::vector<rbd_linked_image_spec_t> children(16);
      std::size_t count = children.size();
      int result = 0;
      while ((result = rbd_list_children3(open.get(), children.data(), &count)) == -ERANGE) children.resize(count);
      if (result < 0) fail("clones of " + pool.name() + "/" + image.name + "@snap", result);
      for (std::size_t i = 0; i < count; ++i) {
        info.clones.push_back(std::string(children[i].pool_name) + "/" + children[i].image_name);
      }
      rbd_linked_image_spec_list_cleanup(children.data(), count);
    } catch (const Error& error) {
      if (error.code() == ErrorCode::kNotFound) continue;  // no snapshot "snap": not a base, or removed meanwhile
      throw;
    }
    std::sort(info.clones.begin(), info.clones.end());
    bases.push_back(std::move(info));
  }
  return bases;
}

std::size_t mark_pool_bases_in_use(Pool& pool, const std::vector<PoolBaseInfo>& listed,
                                   std::chrono::system_clock::time_point now) {
  std::size_t marked = 0;
  for (const PoolBaseInfo& base : listed) {
    if (!base.in_use()) continue;
    try {
      mark_used(pool, base.name, now);
      ++marked;
    } catch (const Error& error) {
      if (error.code() != ErrorCode::kNotFound) throw;  // removed since the listing
    }
  }
  return marked;
}

void remove_pool_base(Pool& pool, const std::string& name) {
  if (!pool.image_exists(name)) throw Error(ErrorCode::kNotFound, "RBD image " + pool.name() + "/" + name + " does not exist");
  remove_with_snapshots(pool, name);
}

std::vector<PoolBasePrune> prune_pool_bases(Pool& pool, const std::vector<PoolBaseInfo>& listed,
                                            std::chrono::seconds minimum_age,
                                            std::chrono::system_clock::time_point now, bool dry_run) {
  std::vector<PoolBasePrune> decisions;
  for (const PoolBaseInfo& base : listed) {
    if (base.in_use()) continue;
    PoolBasePrune decision{base.name, pool.name(), base.size_bytes, "", false, ""};
    auto last_activity = base.last_activity();
    if (!last_activity) {
      decision.reason = std::string("no clones, no import or use time (") + kImportedAtKey + ", " + kLastUsedKey + ")";
    } else if (now - *last_activity > minimum_age) {
      decision.reason = "no clones, unused for more than " + std::to_string(minimum_age.count()) + " s";
    } else {
      continue;
    }
    if (!dry_run) {
      try {
        remove_pool_base(pool, base.name);
        decision.removed = true;
      } catch (const Error& error) {
        // kConflict: a boot cloned it since the listing, and Ceph refused to
        // unprotect its snapshot: the base is as it was.
        if (error.code() == ErrorCode::kNotFound) continue;  // another host's prune took it
        decision.kept = error.code() == ErrorCode::kConflict ? "it has clones now" : error.what();
      }
    }
    decisions.push_back(std::move(decision));
  }
  return decisions;
}

void to_json(nlohmann::json& out, const PoolBaseInfo& base) {
  out = {{"name", base.name},
         {"pool", base.pool},
         {"kind", base.kind},
         {"virtual_bytes", base.size_bytes},
         {"imported_at", base.imported_at ? nlohmann::json(format_utc(*base.imported_at)) : nlohmann::json()},
         {"last_used", base.last_used ? nlohmann::json(format_utc(*base.last_used)) : nlohmann::json()},
         {"clone_count", base.clones.size()},
         {"clones", base.clones},
         {"in_use", base.in_use()}};
  if (!base.image_id.empty()) out["image_id"] = base.image_id;
}

void to_json(nlohmann::json& out, const PoolBasePrune& decision) {
  out = {{"name", decision.name},
         {"pool", decision.pool},
         {"virtual_bytes", decision.size_bytes},
         {"reason", decision.reason},
         {"removed", decision.removed}};
  if (!decision.kept.empty()) out["kept"] = decision.kept;
}

}  // namespace kiln::rbd
