// lib/cache's maintenance without Glance: who uses a base (by identity, not
// by spelling), what repair and prune may delete, what eviction may take, and
// the lock files that go with the bases.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>

#include "kiln/cache/base_info.h"
#include "kiln/cache/maintenance.h"
#include "kiln/disk/overlay.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"
#include "kiln/util/temporaries.h"
#include "scratch.h"

namespace fs = std::filesystem;
namespace cache = kiln::cache;

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// A raw base of 8 MiB with `data_mib` MiB allocated.
fs::path make_base(const fs::path& instances, const std::string& name, unsigned data_mib = 1) {
  fs::create_directories(instances / "_base");
  fs::path path = instances / "_base" / name;
  std::ofstream out(path, std::ios::binary);
  std::string block(kMiB, '\x5a');
  for (unsigned i = 0; i < data_mib; ++i) out.write(block.data(), static_cast<std::streamsize>(block.size()));
  out.close();
  fs::resize_file(path, 8 * kMiB);
  return path;
}

// What kiln writes next to a base it fetched, last used `age` ago.
void give_kiln_info(const fs::path& base, std::chrono::seconds age) {
  cache::BaseInfo info;
  info.image_id = kiln::test::random_uuid();
  info.name = "image";
  info.disk_format = "raw";
  info.container_format = "bare";
  info.virtual_size = kiln::file_size(base);
  info.base_sha256 = std::string(64, '0');
  info.fetched_at = cache::Clock::now() - age;
  info.last_used_at = cache::Clock::now() - age;
  cache::save_base_info(base, info);
}

void set_mtime(const fs::path& path, std::chrono::seconds age) {
  struct timespec times[2];
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = ::time(nullptr) - age.count();
  times[1].tv_nsec = 0;
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

// An instance directory whose disk is an overlay naming `backing` as written.
fs::path make_overlay_user(const fs::path& instances, const fs::path& backing) {
  fs::path directory = instances / kiln::test::random_uuid();
  fs::create_directories(directory);
  kiln::disk::create_overlay(directory / "disk", backing, 16 * kMiB);
  return directory / "disk";
}

std::size_t users_of(const fs::path& instances_path, const std::string& name) {
  for (const auto& entry : cache::list_cache(instances_path)) {
    if (entry.name == name) return entry.users.size();
  }
  FAIL("no base " << name << " in the listing of " << instances_path);
  return 0;
}

const std::string kName = std::string(40, 'a');

struct Unmount {
  fs::path path;
  ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
};

}  // namespace

TEST_CASE("a base is in use when instances_path is given as a relative path") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  make_overlay_user(instances, base);
  fs::path before = fs::current_path();
  fs::current_path(scratch.path());
  std::size_t users = users_of("instances", kName);
  fs::current_path(before);
  REQUIRE(users == 1);
}

TEST_CASE("a base is in use when instances_path is reached through a symlink") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  make_overlay_user(instances, base);
  fs::create_directory_symlink(instances, scratch / "link");
  REQUIRE(users_of(scratch / "link", kName) == 1);
  // And the other way round: overlays written through the link, listed by the real path.
  make_overlay_user(instances, scratch / "link" / "_base" / kName);
  REQUIRE(users_of(instances, kName) == 2);
}

TEST_CASE("a base is in use when instances_path has a trailing slash") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  make_overlay_user(instances, base);
  REQUIRE(users_of(instances.string() + "/", kName) == 1);
  REQUIRE(users_of(instances.string() + "//", kName) == 1);
}

TEST_CASE("a base is in use when instances_path is reached through a bind mount") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  make_overlay_user(instances, base);
  fs::create_directories(scratch / "bound");
  REQUIRE(::mount(instances.c_str(), (scratch / "bound").c_str(), nullptr, MS_BIND, nullptr) == 0);
  Unmount unmount{scratch / "bound"};
  REQUIRE(users_of(scratch / "bound", kName) == 1);
}

TEST_CASE("a backing file that does not resolve here counts by its name inside _base, as nova does") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  make_base(instances, kName);
  // Written on another host, where the shared instances path is mounted
  // elsewhere: the path in the header names nothing on this one.
  fs::path other_host = scratch / "mounted-elsewhere";
  make_overlay_user(instances, make_base(other_host, kName));
  fs::remove_all(other_host);
  REQUIRE(users_of(instances, kName) == 1);
  auto decisions = cache::prune_cache(instances, cache::CachePolicy{}, cache::Clock::now() + std::chrono::hours(48),
                                      /*dry_run=*/false);
  REQUIRE(decisions.empty());
}

TEST_CASE("a disk.info entry that resolves to a base keeps it in use") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  fs::path directory = instances / kiln::test::random_uuid();
  fs::create_directories(directory);
  // nova's Flat backend on a filesystem that links instead of copying.
  fs::create_hard_link(base, directory / "disk");
  kiln::test::write_text(directory / "disk.info", "{\"" + (directory / "disk").string() + "\": \"raw\"}\n");
  REQUIRE(users_of(instances, kName) == 1);
  auto decisions = cache::prune_cache(instances, cache::CachePolicy{}, cache::Clock::now() + std::chrono::hours(48),
                                      /*dry_run=*/false);
  REQUIRE(decisions.empty());
  REQUIRE(fs::exists(base));
}

TEST_CASE("repair never deletes a base kiln did not make, in use or not") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path foreign = make_base(instances, kName);  // nova's: no kiln .info
  fs::path stale = instances / "_base" / (std::string(40, 'b') + ".part");
  kiln::test::write_text(stale, "a crash left this");
  auto actions = cache::repair_cache(instances);
  REQUIRE(fs::exists(foreign));
  REQUIRE_FALSE(fs::exists(stale));
  for (const auto& action : actions) REQUIRE(action.path != foreign);
}

TEST_CASE("repair removes a conversion's private directory once its base's lock is free") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  std::string base = std::string(40, 'c');
  fs::path leftover = instances / "_base" / ("." + base + ".converted.sandbox-a1b2c3");
  fs::create_directories(leftover);
  kiln::test::write_text(leftover / (base + ".converted"), std::string(4096, 'x'));  // killed mid-conversion
  {
    kiln::FileLock converting(instances / "locks" / ("kiln-" + base));
    cache::repair_cache(instances);
    REQUIRE(fs::exists(leftover));  // a conversion at work is left alone
  }
  auto actions = cache::repair_cache(instances);
  REQUIRE_FALSE(fs::exists(leftover));
  REQUIRE(std::any_of(actions.begin(), actions.end(), [&](const auto& action) { return action.path == leftover; }));
}

TEST_CASE("prune ages a base kiln did not make by its mtime, and only when remove_unused_base_images allows") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path old_foreign = make_base(instances, std::string(40, 'a'));
  fs::path young_foreign = make_base(instances, std::string(40, 'b'));
  set_mtime(old_foreign, std::chrono::hours(25));
  set_mtime(young_foreign, std::chrono::hours(23));
  cache::CachePolicy keep;
  keep.remove_unused_base_images = false;
  REQUIRE(cache::prune_cache(instances, keep, cache::Clock::now(), false).empty());
  REQUIRE(fs::exists(old_foreign));

  // The budget is kiln's: it never takes a base kiln did not make.
  keep.max_cache_bytes = 1;
  REQUIRE(cache::prune_cache(instances, keep, cache::Clock::now(), false).empty());

  auto dry = cache::prune_cache(instances, cache::CachePolicy{}, cache::Clock::now(), true);
  REQUIRE(dry.size() == 1);
  REQUIRE(dry[0].path == old_foreign);
  auto pruned = cache::prune_cache(instances, cache::CachePolicy{}, cache::Clock::now(), false);
  REQUIRE(pruned.size() == 1);
  REQUIRE(pruned[0].removed);
  REQUIRE_FALSE(fs::exists(old_foreign));
  REQUIRE(fs::exists(young_foreign));
}

TEST_CASE("a pruned base takes its lock file with it, and repair empties locks of what is gone or expired") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path base = make_base(instances, kName);
  give_kiln_info(base, std::chrono::hours(48));
  fs::path lock_file = instances / "locks" / ("kiln-" + kName);
  { kiln::FileLock used(lock_file); }  // a boot used it once
  REQUIRE(fs::exists(lock_file));
  auto pruned = cache::prune_cache(instances, cache::CachePolicy{}, cache::Clock::now(), false);
  REQUIRE(pruned.size() == 1);
  REQUIRE(pruned[0].removed);
  REQUIRE_FALSE(fs::exists(base));
  REQUIRE_FALSE(fs::exists(lock_file));

  // Left by older kiln versions and failed downloads.
  std::string gone = std::string(40, 'c');
  std::string failed = std::string(40, 'd');
  std::string recent = std::string(40, 'e');
  kiln::test::write_text(instances / "locks" / ("kiln-" + gone), "");
  kiln::test::write_text(instances / "locks" / ("kiln-" + failed + ".failed"), "{}");
  set_mtime(instances / "locks" / ("kiln-" + failed + ".failed"), std::chrono::seconds(601));
  kiln::test::write_text(instances / "locks" / ("kiln-" + recent + ".failed"), "{}");
  kiln::FileLock agent(instances / "locks" / "kilnd.lock");
  cache::repair_cache(instances);
  REQUIRE(kiln::test::tree_listing(instances / "locks") ==
          "kiln-" + recent + ".failed 2\nkilnd.lock " + std::to_string(kiln::file_size(instances / "locks" / "kilnd.lock")) +
              "\n");
}

TEST_CASE("a waiter whose lock file was removed by its holder locks the new file, not the old one") {
  kiln::test::ScratchDir scratch;
  fs::path lock_file = scratch / "locks" / "kiln-x";
  auto holder = std::make_optional<kiln::FileLock>(lock_file);
  REQUIRE_FALSE(kiln::FileLock::try_lock(lock_file));
  holder->unlink_locked();
  REQUIRE_FALSE(fs::exists(lock_file));
  // A new taker creates a new file; the old holder still holds only the old inode.
  auto second = kiln::FileLock::try_lock(lock_file);
  REQUIRE(second);
  REQUIRE(fs::exists(lock_file));
  REQUIRE_FALSE(kiln::FileLock::try_lock(lock_file));
}

TEST_CASE("a wait for a lock ends at its deadline and names the holder's pid") {
  kiln::test::ScratchDir scratch;
  fs::path lock_file = scratch / "locks" / "kiln-x";
  pid_t child = ::fork();
  if (child == 0) {
    kiln::FileLock held(lock_file);
    ::sleep(30);
    ::_exit(0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{child};
  for (int i = 0; i < 200 && kiln::FileLock::try_lock(lock_file); ++i) ::usleep(10000);
  auto started = std::chrono::steady_clock::now();
  try {
    kiln::FileLock waiting(lock_file, std::chrono::milliseconds(300));
    FAIL("the lock was taken while its holder lived");
  } catch (const kiln::Error& error) {
    REQUIRE(error.code() == kiln::ErrorCode::kLockFailed);
    REQUIRE(std::string(error.what()).find("pid " + std::to_string(child)) != std::string::npos);
  }
  REQUIRE(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
}

TEST_CASE("making room evicts nothing for a request that cannot fit, and otherwise only old unused bases, least recently used first, as needed") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::create_directories(instances);
  REQUIRE(::mount("tmpfs", instances.c_str(), "tmpfs", 0, "size=32m") == 0);
  Unmount unmount{instances};
  std::vector<fs::path> bases;
  for (char c : {'a', 'b', 'c'}) bases.push_back(make_base(instances, std::string(40, c), 6));
  give_kiln_info(bases[0], std::chrono::hours(3));
  give_kiln_info(bases[1], std::chrono::hours(2));
  give_kiln_info(bases[2], std::chrono::seconds(10));  // just fetched: not evictable
  fs::path foreign = make_base(instances, std::string(40, 'f'), 6);
  set_mtime(foreign, std::chrono::hours(100));          // not kiln's: never evicted
  std::uint64_t available = kiln::available_bytes(instances);

  auto hopeless = cache::make_room(instances, 1ULL << 40, cache::CachePolicy{}, cache::Clock::now());
  REQUIRE_FALSE(hopeless.fits);
  REQUIRE(hopeless.evicted.empty());
  for (const auto& base : bases) REQUIRE(fs::exists(base));
  REQUIRE(fs::exists(foreign));

  auto room = cache::make_room(instances, available + 3 * kMiB, cache::CachePolicy{}, cache::Clock::now());
  REQUIRE(room.fits);
  REQUIRE(room.evicted.size() == 1);
  REQUIRE_FALSE(fs::exists(bases[0]));
  REQUIRE(fs::exists(bases[1]));
  REQUIRE(fs::exists(bases[2]));
  REQUIRE(fs::exists(foreign));
}

TEST_CASE("repair removes the temporaries a crash left at the top of instances_path, and only those whose owner is gone") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch.path();
  fs::create_directories(instances / "locks");
  const std::string dead = "0f0e0d0c-0b0a-4908-8706-050403020100";
  const std::string alive = "1f0e0d0c-0b0a-4908-8706-050403020100";
  // A provision killed while building: its instance lock is free.
  fs::path dead_building = instances / ("." + dead + ".building-a1B2c3");
  fs::create_directories(dead_building);
  kiln::test::write_text(dead_building / "disk", "half a disk");
  kiln::test::write_text(kiln::layout::instance_lock_path(instances, dead), "");
  // A provision still running: it holds its instance lock.
  fs::path live_building = instances / ("." + alive + ".building-d4E5f6");
  fs::create_directories(live_building);
  kiln::FileLock held(kiln::layout::instance_lock_path(instances, alive));
  // A delete killed after moving the directory aside.
  fs::path deleting = instances / ("." + dead + ".deleting-Zz9Yy8");
  fs::create_directories(deleting);
  kiln::test::write_text(deleting / "disk", "going");
  // O_DIRECT probes: one a crash left, one a live prober holds.
  fs::path stale_probe = instances / ".directio.test.12345";
  kiln::test::write_text(stale_probe, "");
  fs::path live_probe = instances / ".directio.test.67890";
  kiln::test::write_text(live_probe, "");
  kiln::UniqueFd probe_fd = kiln::open_file(live_probe, O_RDONLY);
  REQUIRE(::flock(probe_fd.get(), LOCK_EX) == 0);
  // Not kiln's: never touched.
  fs::path foreign = instances / ".directio.test.not-a-number";
  kiln::test::write_text(foreign, "");
  fs::path instance = instances / dead;
  fs::create_directories(instance);

  auto actions = cache::repair_cache(instances);
  auto removed = [&](const fs::path& path) {
    return std::any_of(actions.begin(), actions.end(), [&](const auto& action) { return action.path == path; });
  };
  REQUIRE_FALSE(fs::exists(dead_building));
  REQUIRE(removed(dead_building));
  REQUIRE_FALSE(fs::exists(kiln::layout::instance_lock_path(instances, dead)));
  REQUIRE(fs::exists(live_building));
  REQUIRE(fs::exists(kiln::layout::instance_lock_path(instances, alive)));
  REQUIRE_FALSE(fs::exists(deleting));
  REQUIRE_FALSE(fs::exists(stale_probe));
  REQUIRE(removed(stale_probe));
  REQUIRE(fs::exists(live_probe));
  REQUIRE(fs::exists(foreign));
  REQUIRE(fs::exists(instance));
}

TEST_CASE("the O_DIRECT probe leaves nothing behind, and its file name is one repair knows") {
  kiln::test::ScratchDir scratch;
  std::string before = kiln::test::tree_listing(scratch.path());
  (void)kiln::supports_direct_io(scratch.path());
  REQUIRE(kiln::test::tree_listing(scratch.path()) == before);
  auto probe = kiln::direct_io_probe_path(scratch.path());
  REQUIRE(probe.parent_path() == scratch.path());
  auto parsed = kiln::layout::parse(kiln::layout::Place::kInstancesPath, probe.filename().string());
  REQUIRE(parsed.has_value());
  REQUIRE(parsed->kind == kiln::layout::Kind::kDirectIoProbe);
}
