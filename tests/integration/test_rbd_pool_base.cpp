// kiln's pool bases (lib/rbd/pool_base) on the real single-node Ceph: written once per cluster from a local
// file, sparse, published whole with a protected snapshot; one import when several clients (hosts) race;
// an import cut short or a holder that died does not block the next; a base with clones is not removed, and
// prune ages the others by their import time.
// Budget: about 10 s (the dead-holder test waits out a 3 s lock).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "assertions.h"
#include "ceph_support.h"
#include "kiln/rbd/cluster.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/rbd/pool_base.h"
#include "kiln/util/error.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace {

using kiln::ErrorCode;
using kiln::test::ceph;
using kiln::test::connect_as_kiln;
using kiln::test::rbd_admin;
using kiln::test::rbd_exists;
using kiln::test::rbd_info;
using namespace kiln::rbd;

constexpr std::uint64_t kMiB = 1024 * 1024;

// A sparse 16 MiB file with 1 MiB of 0x5a at 0, 1 MiB of 0xc3 at 9 MiB, and a written run of zeros at 4 MiB
// (data on disk that is all zero: not written into the pool either).
std::filesystem::path sparse_file(const kiln::test::ScratchDir& scratch) {
  std::filesystem::path file = scratch / "base.raw";
  kiln::run(kiln::Command({"truncate", "-s", "16M", file.string()}));
  for (auto [pattern, offset] : {std::pair{"0x5a", "0"}, std::pair{"0xc3", "9M"}, std::pair{"0x00", "4M"}}) {
    auto result = kiln::run(kiln::Command(
        {"qemu-io", "-f", "raw", "-c", std::string("write -P ") + pattern + " " + offset + " 1M", file.string()}));
    REQUIRE(result.exit_code == 0);
  }
  return file;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string unique_base() { return pool_base_name("test-" + kiln::test::random_uuid()); }

}  // namespace

TEST_CASE("a pool base is written once from its file, sparse, under its name only when whole, and then only cloned",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  Cluster cluster = connect_as_kiln();
  std::string name = unique_base();
  int calls = 0;
  auto local = [&] {
    ++calls;
    REQUIRE_FALSE(rbd_exists("vms", name));  // nothing under the final name while the file is being made
    return LocalFile{file, nullptr, {{kImageIdKey, "an-image-id"}}};
  };

  PoolBase first = ensure_pool_base(cluster, "vms", name, local);
  REQUIRE(calls == 1);
  REQUIRE(first.imported);
  REQUIRE(first.size_bytes == 16 * kMiB);
  REQUIRE(first.written_bytes == 2 * kMiB);  // the hole and the written zeros are not written
  REQUIRE(first.location == Location{ceph().fsid, "vms", name, "snap"});
  REQUIRE_FALSE(rbd_exists("vms", name + ".part"));
  nlohmann::json snaps = nlohmann::json::parse(rbd_admin({"snap", "ls", "--format", "json", "vms/" + name}));
  REQUIRE(snaps.size() == 1);
  REQUIRE(snaps[0]["name"] == "snap");
  REQUIRE(rbd_info("vms/" + name + "@snap")["protected"] == "true");
  // The bytes are the file's, read back by Ceph's own tool.
  rbd_admin({"export", "vms/" + name + "@snap", (scratch / "exported").string()});
  REQUIRE(read_file(scratch / "exported") == read_file(file));

  PoolBase second = ensure_pool_base(cluster, "vms", name, local);
  REQUIRE(calls == 1);
  REQUIRE_FALSE(second.imported);
  REQUIRE(second.location == first.location);
  REQUIRE(second.size_bytes == 16 * kMiB);

  // Listed with the image it holds and its clones; not removable while it has one.
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();
  clone_root_disk(cluster, first.location, vms, uuid, 0);
  auto listed = list_pool_bases(vms);
  auto it = std::find_if(listed.begin(), listed.end(), [&](const PoolBaseInfo& base) { return base.name == name; });
  REQUIRE(it != listed.end());
  REQUIRE(it->image_id == "an-image-id");
  REQUIRE(it->size_bytes == 16 * kMiB);
  REQUIRE(it->clones == std::vector<std::string>{"vms/" + uuid + "_disk"});
  REQUIRE_KILN_ERROR_MENTIONS(remove_pool_base(vms, name), ErrorCode::kConflict, "has clones");
  REQUIRE(rbd_info("vms/" + name + "@snap")["protected"] == "true");
  remove_instance_images(vms, uuid);
  remove_pool_base(vms, name);
  REQUIRE_FALSE(rbd_exists("vms", name));
  REQUIRE_KILN_ERROR(remove_pool_base(vms, name), ErrorCode::kNotFound);
}

TEST_CASE("hosts racing for one pool base import it once, and the others wait and clone what it published", "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  std::string name = unique_base();
  std::atomic<int> calls{0};
  constexpr int kHosts = 4;
  std::vector<PoolBase> results(kHosts);
  std::vector<std::string> failures(kHosts);
  {
    std::vector<std::jthread> hosts;
    for (int i = 0; i < kHosts; ++i) {
      hosts.emplace_back([&, i] {
        try {
          Cluster cluster = connect_as_kiln();  // a connection of its own, as each host has
          results[i] = ensure_pool_base(cluster, "vms", name, [&] {
            ++calls;
            std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a download, long enough to be raced
            return LocalFile{file, nullptr, {}};
          });
        } catch (const std::exception& error) {
          failures[i] = error.what();
        }
      });
    }
  }
  for (const auto& failure : failures) REQUIRE(failure.empty());
  REQUIRE(calls == 1);
  REQUIRE(std::count_if(results.begin(), results.end(), [](const PoolBase& base) { return base.imported; }) == 1);
  for (const auto& result : results) REQUIRE(result.location == results[0].location);
  // Those that waited, waited for the download.
  REQUIRE(std::count_if(results.begin(), results.end(), [](const PoolBase& base) {
            return !base.imported && base.waited >= std::chrono::milliseconds(1000);
          }) >= 1);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  remove_pool_base(vms, name);
}

TEST_CASE("an import cut short leaves only a .part, which the next import replaces, and a failed download frees the lock",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  Cluster cluster = connect_as_kiln();
  std::string name = unique_base();
  // A crash after the snapshot was protected, before the rename.
  rbd_admin({"create", "--size", "4M", "vms/" + name + ".part"});
  rbd_admin({"snap", "create", "vms/" + name + ".part@snap"});
  rbd_admin({"snap", "protect", "vms/" + name + ".part@snap"});
  Pool vms = cluster.open_pool("vms");
  for (const auto& base : list_pool_bases(vms)) REQUIRE(base.name != name + ".part");  // not a base

  // A download that fails: nothing published, and the lock is free at once for the next boot.
  REQUIRE_KILN_ERROR(ensure_pool_base(cluster, "vms", name,
                                      []() -> LocalFile {
                                        throw kiln::Error(ErrorCode::kChecksumMismatch, "the download was wrong");
                                      }),
                     ErrorCode::kChecksumMismatch);
  REQUIRE_FALSE(rbd_exists("vms", name));

  PoolBase base = ensure_pool_base(cluster, "vms", name, [&] { return LocalFile{file, nullptr, {}}; });
  REQUIRE(base.imported);
  REQUIRE(base.waited < std::chrono::seconds(2));
  REQUIRE(base.size_bytes == 16 * kMiB);
  REQUIRE_FALSE(rbd_exists("vms", name + ".part"));
  remove_pool_base(vms, name);
}

TEST_CASE("a base whose removal failed after its snapshot went is not published, and the next import replaces it",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  Cluster cluster = connect_as_kiln();
  std::string name = unique_base();
  rbd_admin({"create", "--size", "4M", "vms/" + name});  // the final name, without "snap"
  Pool vms = cluster.open_pool("vms");
  for (const auto& base : list_pool_bases(vms)) REQUIRE(base.name != name);  // not a base

  PoolBase base = ensure_pool_base(cluster, "vms", name, [&] { return LocalFile{file, nullptr, {}}; });
  REQUIRE(base.imported);
  REQUIRE(base.size_bytes == 16 * kMiB);
  REQUIRE(rbd_info("vms/" + name + "@snap")["protected"] == "true");
  REQUIRE(rbd_info("vms/" + name)["size"] == 16 * kMiB);
  remove_pool_base(vms, name);
  REQUIRE_FALSE(rbd_exists("vms", name));
}

TEST_CASE("a host that died holding the import lock holds up the import only until its lock expires", "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  Cluster cluster = connect_as_kiln();
  std::string name = unique_base();
  // Another client takes the lock for 3 s and never renews it (as a host that crashed would).
  auto taken = kiln::run(kiln::Command({"rados", "--conf", ceph().conf, "-p", "vms", "lock", "get", name + ".lock",
                                        "kiln-import", "--lock-cookie", "dead-host", "--lock-duration", "3"}));
  INFO(taken.err);
  REQUIRE(taken.exit_code == 0);

  PoolBase base = ensure_pool_base(cluster, "vms", name, [&] { return LocalFile{file, nullptr, {}}; });
  REQUIRE(base.imported);
  REQUIRE(base.waited >= std::chrono::seconds(2));
  REQUIRE(base.waited < std::chrono::seconds(15));
  // A waiter with a shorter patience gives up with rbd_error naming the base.
  std::string other = unique_base();
  REQUIRE(kiln::run(kiln::Command({"rados", "--conf", ceph().conf, "-p", "vms", "lock", "get", other + ".lock",
                                   "kiln-import", "--lock-cookie", "busy-host", "--lock-duration", "5"}))
              .exit_code == 0);
  REQUIRE_KILN_ERROR_MENTIONS(
      ensure_pool_base(cluster, "vms", other, [&] { return LocalFile{file, nullptr, {}}; }, std::chrono::seconds(1)),
      ErrorCode::kRbdError, other);
  REQUIRE_FALSE(rbd_exists("vms", other));
  Pool vms = cluster.open_pool("vms");
  remove_pool_base(vms, name);
}

TEST_CASE("prune removes pool bases without clones unused for longer than the age, and keeps one cloned since the listing",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path file = sparse_file(scratch);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  std::string name = unique_base();
  using std::chrono::system_clock;
  constexpr std::chrono::seconds kAge{3600};
  // Only this test's bases: other tests' bases in the pool are not this test's to prune.
  auto listed = [&](const std::vector<std::string>& names) {
    std::vector<PoolBaseInfo> ours;
    for (PoolBaseInfo& base : list_pool_bases(vms)) {
      if (std::find(names.begin(), names.end(), base.name) != names.end()) ours.push_back(std::move(base));
    }
    REQUIRE(ours.size() == names.size());
    return ours;
  };

  // The import records when it happened.
  auto before = std::chrono::floor<std::chrono::seconds>(system_clock::now());
  ensure_pool_base(cluster, "vms", name, [&] { return LocalFile{file, nullptr, {{kImageIdKey, "an-image-id"}}}; });
  auto after = system_clock::now();
  PoolBaseInfo fresh = listed({name})[0];
  REQUIRE(fresh.imported_at.has_value());
  REQUIRE(*fresh.imported_at >= before);
  REQUIRE(*fresh.imported_at <= after);
  REQUIRE(fresh.image_id == "an-image-id");
  REQUIRE(fresh.kind == "other");  // "test-<uuid>" is none of kiln's local base names
  REQUIRE_FALSE(fresh.in_use());
  // Young: kept, not even a decision.
  REQUIRE(prune_pool_bases(vms, listed({name}), kAge, system_clock::now(), false).empty());
  REQUIRE(rbd_exists("vms", name));

  // Imported long ago (as an older kiln would have recorded it): a dry run says so and removes nothing.
  rbd_admin({"image-meta", "set", "vms/" + name, kImportedAtKey, "1000"});
  REQUIRE(listed({name})[0].imported_at == system_clock::time_point(std::chrono::seconds(1000)));
  auto dry = prune_pool_bases(vms, listed({name}), kAge, system_clock::now(), true);
  REQUIRE(dry.size() == 1);
  REQUIRE(dry[0].name == name);
  REQUIRE(dry[0].reason == "no clones, unused for more than 3600 s");
  REQUIRE_FALSE(dry[0].removed);
  REQUIRE(rbd_exists("vms", name));

  // A clone made after the listing: the removal fails safely and the base is reported as kept, still protected.
  auto stale = listed({name});
  std::string uuid = kiln::test::random_uuid();
  clone_root_disk(cluster, Location{ceph().fsid, "vms", name, "snap"}, vms, uuid, 0);
  auto raced = prune_pool_bases(vms, stale, kAge, system_clock::now(), false);
  REQUIRE(raced.size() == 1);
  REQUIRE_FALSE(raced[0].removed);
  REQUIRE(raced[0].kept == "it has clones now");
  REQUIRE(rbd_info("vms/" + name + "@snap")["protected"] == "true");
  // Listed with its clone now: in use, not a candidate.
  PoolBaseInfo cloned = listed({name})[0];
  REQUIRE(cloned.in_use());
  REQUIRE(cloned.clones == std::vector<std::string>{"vms/" + uuid + "_disk"});
  REQUIRE(prune_pool_bases(vms, listed({name}), kAge, system_clock::now(), false).empty());
  REQUIRE(rbd_exists("vms", name));
  // A cache manager marks it used: once its clone is gone it is young, though imported long ago.
  REQUIRE_FALSE(cloned.last_used.has_value());
  REQUIRE(mark_pool_bases_in_use(vms, listed({name}), system_clock::now()) == 1);
  REQUIRE(listed({name})[0].last_used.has_value());
  remove_instance_images(vms, uuid);
  REQUIRE(prune_pool_bases(vms, listed({name}), kAge, system_clock::now(), false).empty());
  // A boot that finds it published marks it used too.
  rbd_admin({"image-meta", "set", "vms/" + name, kLastUsedKey, "1000"});
  REQUIRE(listed({name})[0].last_used == system_clock::time_point(std::chrono::seconds(1000)));
  PoolBase found = ensure_pool_base(cluster, "vms", name, []() -> LocalFile { FAIL("imported again"); return {}; });
  REQUIRE_FALSE(found.imported);
  REQUIRE(*listed({name})[0].last_used >= before);
  REQUIRE(prune_pool_bases(vms, listed({name}), kAge, system_clock::now(), false).empty());
  // Used long ago and imported long ago: it goes below.
  rbd_admin({"image-meta", "set", "vms/" + name, kLastUsedKey, "1000"});

  // The clone gone, the old base goes; so does a base without an import time, which counts as old.
  remove_instance_images(vms, uuid);
  std::string unrecorded = unique_base();
  rbd_admin({"create", "--size", "4M", "vms/" + unrecorded});
  rbd_admin({"snap", "create", "vms/" + unrecorded + "@snap"});
  rbd_admin({"snap", "protect", "vms/" + unrecorded + "@snap"});
  auto both = listed({name, unrecorded});
  for (const PoolBaseInfo& base : both) REQUIRE(base.imported_at.has_value() == (base.name == name));
  auto pruned = prune_pool_bases(vms, both, kAge, system_clock::now(), false);
  REQUIRE(pruned.size() == 2);
  for (const PoolBasePrune& decision : pruned) {
    INFO(decision.name);
    REQUIRE(decision.removed);
    REQUIRE(decision.kept.empty());
    REQUIRE(decision.pool == "vms");
    REQUIRE(decision.reason == (decision.name == unrecorded
                                    ? "no clones, no import or use time (kiln.imported_at, kiln.last_used)"
                                    : "no clones, unused for more than 3600 s"));
  }
  REQUIRE_FALSE(rbd_exists("vms", name));
  REQUIRE_FALSE(rbd_exists("vms", unrecorded));
  // A listing older than another host's prune: the base already gone is no decision, and no error.
  REQUIRE(prune_pool_bases(vms, both, kAge, system_clock::now(), false).empty());
}
