// The crash matrix: kiln is killed (SIGKILL, by its own failpoint,
// kiln/util/failpoint.h) at every named point of boot, delete, prune, cache
// repair, reconcile, recover and kilnd's start and reload, on the real peers
// (Glance, the private libvirtd, qemu-img). After each death the host is
// reconciled, the operation retried, and the invariants checked:
//   - the process died at the point, with the failpoint's signature (no
//     point passes by running nothing);
//   - no partial file under a final name: every image base matches its
//     .info (size and sha256 as kiln records them), swap and ephemeral bases
//     have their full size and signature, every instance disk passes
//     qemu-img check;
//   - no temporaries left after reconcile/repair (.part, .converted, .tmp,
//     sandboxes, building/deleting directories, O_DIRECT probes, instance locks);
//   - no empty, half-built or orphan instance directory: each one has its
//     domain, each of the test's domains its directory;
//   - the retried operation succeeds.
// Every point in the sources must appear here, and every point here in the
// sources, except the Ceph steps' (rbd.*): tests/integration/test_rbd_crash.cpp
// has those. Budget: about 2 minutes on a loaded 2-core host (images of a few
// MiB, domains defined but not started except where a point needs a start).
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "kiln/util/data_digest.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/uuid.h"
#include "failpoints.h"
#include "kilnd_process.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One host: a fresh instances path on the shared peers.
struct World {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path config = scratch / "kiln.conf";
  std::vector<std::string> uuids;  // every instance the scenario touched

  World() {
    // Prune may take every unused base at once (nova's aging with age 0).
    kiln::test::write_text(config,
                           "[image_cache]\nremove_unused_base_images = true\n"
                           "remove_unused_original_minimum_age_seconds = 0\n");
  }
  ~World() {
    for (const auto& uuid : uuids) run_kilnctl({"delete", uuid});
  }

  kiln::CommandResult run_kilnctl(const std::vector<std::string>& args, const std::string& failpoint = "",
                                  const std::string& libvirt_uri = "") const {
    std::vector<std::string> argv = {"env"};
    if (!failpoint.empty()) argv.push_back("KILN_FAILPOINT=" + failpoint);
    std::vector<std::string> kilnctl = {KILN_KILNCTL, "--json", "--config", config.string(), "--glance",
                                        kiln::test::peers().glance_url, "--libvirt-uri",
                                        libvirt_uri.empty() ? kiln::test::peers().libvirt_uri : libvirt_uri,
                                        "--virt-type", "qemu", "--instances-path", instances.string()};
    argv.insert(argv.end(), kilnctl.begin(), kilnctl.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return kiln::run({argv, {}, std::chrono::minutes(3)});
  }
};

// A 4 MiB qcow2 (so a boot converts) with recognisable data, uploaded once.
const std::string& image_id() {
  static const std::string id = [] {
    kiln::test::ScratchDir scratch;
    fs::path image = scratch / "crash.qcow2";
    kiln::run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", image.string(), "4M"}});
    kiln::run_checked({{"qemu-io", "-f", "qcow2", "-c", "write -P 0xc3 0 1M", image.string()}});
    return kiln::test::upload_image("crash-matrix", "qcow2", image);
  }();
  return id;
}

// Another such image (other data), for a scenario that needs two bases.
const std::string& other_image_id() {
  static const std::string id = [] {
    kiln::test::ScratchDir scratch;
    fs::path image = scratch / "other.qcow2";
    kiln::run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", image.string(), "4M"}});
    kiln::run_checked({{"qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 1M", image.string()}});
    return kiln::test::upload_image("crash-matrix-other", "qcow2", image);
  }();
  return id;
}

struct Shape {
  bool ephemeral = false;
  bool start = false;
};

std::vector<std::string> boot_args(const std::string& uuid, Shape shape) {
  std::vector<std::string> args = {"boot", "--image", image_id(), "--uuid", uuid, "--vcpus", "1",
                                   "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "16"};
  if (shape.ephemeral) args.insert(args.end(), {"--ephemeral-gb", "1"});
  if (!shape.start) args.push_back("--no-start");
  return args;
}

std::string describe(const kiln::CommandResult& result) {
  return "exit " + std::to_string(result.exit_code) + "\nstdout: " + result.out + "\nstderr: " + result.err;
}

// The process died at `point`, by the failpoint's own SIGKILL.
void require_died_at(const kiln::CommandResult& result, const std::string& point) {
  INFO("expected a death at " << point << "\n" << describe(result));
  REQUIRE(result.exit_code == 128 + SIGKILL);
  REQUIRE(result.err.find("kiln failpoint " + point + " reached") != std::string::npos);
}

void require_ok(const kiln::CommandResult& result, const std::string& what) {
  INFO(what << "\n" << describe(result));
  REQUIRE(result.exit_code == 0);
}

bool domain_defined(const std::string& uuid) { return kiln::test::virsh({"dominfo", uuid}).exit_code == 0; }

bool has_suffix(const std::string& name, const std::string& suffix) {
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_temporary(const fs::path& path) {
  std::string name = path.filename().string();
  return has_suffix(name, ".part") || has_suffix(name, ".converted") || has_suffix(name, ".tmp") ||
         name.find(".sandbox-") != std::string::npos || name.rfind(".directio.test.", 0) == 0 ||
         name.find(".building-") != std::string::npos || name.find(".deleting-") != std::string::npos ||
         (path.parent_path().filename() == "locks" && name.rfind("instance-", 0) == 0);
}

bool is_base_name(const std::string& name) {
  return name.size() == 40 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::string bytes_at(const fs::path& file, std::uint64_t offset, std::size_t length) {
  std::ifstream in(file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string data(length, '\0');
  in.read(data.data(), static_cast<std::streamsize>(length));
  return data;
}

// What a crash may never leave, however it was cut short.
void require_no_temporaries(const World& world) {
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(world.instances, error); it != fs::recursive_directory_iterator();
       it.increment(error)) {
    INFO("a temporary survived reconcile: " << it->path());
    REQUIRE_FALSE(is_temporary(it->path()));
  }
}

void require_whole_bases(const World& world) {
  fs::path base_directory = world.instances / "_base";
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(base_directory, error)) {
    std::string name = entry.path().filename().string();
    INFO("base " << entry.path());
    if (is_base_name(name)) {
      fs::path info_path = base_directory / (name + ".info");
      REQUIRE(fs::exists(info_path));
      json info = json::parse(kiln::read_file(info_path));
      REQUIRE(fs::file_size(entry.path()) == info.at("virtual_size").get<std::uint64_t>());
      // The digest cache verify checks: XXH3-128 over the data extents (or, in
      // an older .info, the sha256 of the whole file).
      if (info.contains("base_digest")) {
        REQUIRE(info["base_digest"].at("algorithm") == "xxh3-128");
        REQUIRE(kiln::data_digest_of_file(entry.path()) == info["base_digest"].at("value").get<std::string>());
      } else {
        REQUIRE(kiln::hex_digest_of_file("sha256", entry.path().string()) == info.at("base_sha256").get<std::string>());
      }
    } else if (has_suffix(name, ".info")) {
      REQUIRE(fs::exists(base_directory / name.substr(0, name.size() - 5)));  // no .info without its base
    } else if (name.rfind("swap_", 0) == 0) {
      std::uint64_t megabytes = std::stoull(name.substr(5));
      REQUIRE(fs::file_size(entry.path()) == megabytes << 20);
      REQUIRE(bytes_at(entry.path(), 4096 - 10, 10) == "SWAPSPACE2");
    } else if (name.rfind("ephemeral_", 0) == 0) {
      std::uint64_t gigabytes = std::stoull(name.substr(10));
      REQUIRE(fs::file_size(entry.path()) == gigabytes << 30);
      // A whole filesystem: ext2/3/4's magic, or a FAT boot sector's
      // signature (vfat is nova's default for a guest without os_type).
      bool ext = bytes_at(entry.path(), 1024 + 56, 2) == std::string("\x53\xef", 2);
      bool fat = bytes_at(entry.path(), 510, 2) == std::string("\x55\xaa", 2);
      REQUIRE((ext || fat));
    } else {
      FAIL("unexpected entry in _base: " << name);
    }
  }
}

// Each instance directory is whole and has its domain; each domain its directory.
void require_whole_instances(const World& world) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(world.instances, error)) {
    std::string name = entry.path().filename().string();
    // kilnd's operations journal lives beside the instances (a compaction's
    // operations.log.tmp is replaced at the next start, so it may remain).
    if (name == "_base" || name == "locks" || name == "operations.log" || name == "operations.log.tmp") continue;
    INFO("instance directory " << entry.path());
    REQUIRE(kiln::is_canonical_uuid(name));
    REQUIRE_FALSE(fs::exists(entry.path() / ".kiln-provisioning"));
    REQUIRE_FALSE(fs::exists(entry.path() / ".kiln-deleting"));
    REQUIRE(fs::exists(entry.path() / "libvirt.xml"));
    REQUIRE(fs::exists(entry.path() / "disk.info"));
    for (const char* disk : {"disk", "disk.swap"}) {
      auto check = kiln::run({{"qemu-img", "check", "-q", "-U", (entry.path() / disk).string()}});
      INFO(disk << ": " << check.out << check.err);
      REQUIRE(check.exit_code == 0);
    }
    REQUIRE(domain_defined(name));
  }
  for (const auto& uuid : world.uuids) {
    INFO("instance " << uuid);
    REQUIRE(domain_defined(uuid) == fs::exists(world.instances / uuid));
  }
}

void reconcile(const World& world) {
  require_ok(world.run_kilnctl({"instance", "reconcile"}), "reconcile after the crash");
  require_no_temporaries(world);
  require_whole_bases(world);
}

void require_invariants(const World& world) {
  reconcile(world);
  require_whole_instances(world);
}

// ---- scenarios ---------------------------------------------------------------

// A boot killed at `point`; reconcile; the same boot again.
void boot_killed(const std::string& point, Shape shape = {}) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_died_at(world.run_kilnctl(boot_args(uuid, shape), point), point);
  reconcile(world);
  auto retried = world.run_kilnctl(boot_args(uuid, shape));
  if (point == "boot.marker.removed") {
    // Killed after the boot had succeeded: the instance is whole, and says so.
    INFO(describe(retried));
    REQUIRE(json::parse(retried.out)["error"]["code"] == "instance_exists");
  } else {
    require_ok(retried, "the retried boot");
  }
  REQUIRE(domain_defined(uuid));
  require_invariants(world);
}

// A boot that fails after its definition (libvirt lost), killed while undoing it.
void rollback_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  {
    kiln::test::LibvirtProxy proxy(world.scratch.path(), "after-define");
    require_died_at(world.run_kilnctl(boot_args(uuid, {.ephemeral = false, .start = true}), point, proxy.uri()),
                    point);
  }
  reconcile(world);
  REQUIRE_FALSE(domain_defined(uuid));
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the retried boot");
  require_invariants(world);
}

// An instance booted, then its delete killed at `point`; the delete again.
void delete_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the boot");
  require_died_at(world.run_kilnctl({"delete", uuid}, point), point);
  reconcile(world);
  require_ok(world.run_kilnctl({"delete", uuid}), "the retried delete");
  REQUIRE_FALSE(domain_defined(uuid));
  REQUIRE_FALSE(fs::exists(world.instances / uuid));
  require_invariants(world);
}

// Unused bases pruned; the prune killed at `point`; prune again.
void prune_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the boot");
  require_ok(world.run_kilnctl({"delete", uuid}), "the delete");
  require_died_at(world.run_kilnctl({"cache", "prune"}, point), point);
  reconcile(world);
  require_ok(world.run_kilnctl({"cache", "prune"}), "the retried prune");
  require_invariants(world);
  // And the cache still serves a boot.
  world.uuids.push_back(uuid);
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "a boot after the prune");
  require_invariants(world);
}

// Two boots' leftovers, then `cache repair` killed at `point`: one killed
// while building (its base fetched first, as every boot does: a .building-
// temporary), one of another image killed mid-fetch (.part, .converted).
void repair_killed(const std::string& point) {
  World world;
  std::string building = kiln::test::random_uuid();
  world.uuids.push_back(building);
  require_died_at(world.run_kilnctl(boot_args(building, {}), "boot.marker.created"), "boot.marker.created");
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  auto other = boot_args(uuid, {});
  other[2] = other_image_id();
  require_died_at(world.run_kilnctl(other, "fetch.download.done"), "fetch.download.done");
  require_died_at(world.run_kilnctl({"cache", "repair"}, point), point);
  require_ok(world.run_kilnctl({"cache", "repair"}), "the retried repair");
  require_no_temporaries(world);
  require_ok(world.run_kilnctl(other), "the retried boot");
  require_invariants(world);
}

// A boot killed after its definition; reconcile killed at `point` while undoing it.
void reconcile_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_died_at(world.run_kilnctl(boot_args(uuid, {}), "boot.define.after"), "boot.define.after");
  require_died_at(world.run_kilnctl({"instance", "reconcile"}, point), point);
  reconcile(world);
  REQUIRE_FALSE(domain_defined(uuid));
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the retried boot");
  require_invariants(world);
}

// An instance whose domain an operator undefined; recover killed at `point`.
void recover_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the boot");
  REQUIRE(kiln::test::virsh({"undefine", uuid}).exit_code == 0);
  require_died_at(world.run_kilnctl({"instance", "recover", uuid, "--no-start"}, point), point);
  require_ok(world.run_kilnctl({"instance", "recover", uuid, "--no-start"}), "the retried recover");
  require_invariants(world);
}

struct Kilnd {
  fs::path socket;
  fs::path config;
};

Kilnd kilnd_config(const World& world) {
  fs::path socket = world.scratch / "kilnd.sock";
  fs::path directory = world.scratch / "kilnd";
  fs::create_directories(directory);
  return {socket, kiln::test::write_kilnd_config(directory, world.instances, kiln::test::peers().glance_url,
                                                 kiln::test::peers().libvirt_uri, socket)};
}

void require_kilnd_died_at(kiln::test::KilndProcess& kilnd, const std::string& point) {
  int status = kilnd.wait_exit(std::chrono::seconds(120));
  INFO("kilnd, expected to die at " << point << "; its log:\n" << kilnd.log());
  REQUIRE(status == 128 + SIGKILL);
  REQUIRE(kilnd.log().find("kiln failpoint " + point + " reached") != std::string::npos);
}

// kilnd started over a host a crashed boot left, killed at `point` of its start.
void kilnd_start_killed(const std::string& point) {
  World world;
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_died_at(world.run_kilnctl(boot_args(uuid, {}), "boot.define.after"), "boot.define.after");
  Kilnd paths = kilnd_config(world);
  {
    kiln::test::KilndProcess kilnd(paths.config, paths.socket, {{"KILN_FAILPOINT", point}});
    require_kilnd_died_at(kilnd, point);
  }
  {
    kiln::test::KilndProcess kilnd(paths.config, paths.socket);
    INFO(kilnd.log());
    REQUIRE(kilnd.wait_ready(std::chrono::seconds(120)));
    REQUIRE(kilnd.stop(SIGTERM) == 0);
  }
  REQUIRE_FALSE(domain_defined(uuid));  // kilnd's start undid the unfinished boot
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "the retried boot");
  require_invariants(world);
}

// A running kilnd told to reload (SIGHUP), killed at `point` of the reload.
void kilnd_reload_killed(const std::string& point) {
  World world;
  Kilnd paths = kilnd_config(world);
  {
    kiln::test::KilndProcess kilnd(paths.config, paths.socket, {{"KILN_FAILPOINT", point}});
    REQUIRE(kilnd.wait_ready(std::chrono::seconds(120)));
    ::kill(kilnd.pid(), SIGHUP);
    require_kilnd_died_at(kilnd, point);
  }
  {
    kiln::test::KilndProcess kilnd(paths.config, paths.socket);
    REQUIRE(kilnd.wait_ready(std::chrono::seconds(120)));
    ::kill(kilnd.pid(), SIGHUP);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (kilnd.log().find("settings reloaded") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    INFO(kilnd.log());
    REQUIRE(kilnd.log().find("settings reloaded") != std::string::npos);
    REQUIRE(kilnd.wait_ready(std::chrono::seconds(30)));
    REQUIRE(kilnd.stop(SIGTERM) == 0);
  }
  std::string uuid = kiln::test::random_uuid();
  world.uuids.push_back(uuid);
  require_ok(world.run_kilnctl(boot_args(uuid, {})), "a boot after the restart");
  require_invariants(world);
}

using Scenario = std::function<void(const std::string&)>;

Scenario boot_with(Shape shape) {
  return [shape](const std::string& point) { boot_killed(point, shape); };
}

// Every failpoint, with the operation that reaches it.
const std::vector<std::pair<std::string, Scenario>>& matrix() {
  static const std::vector<std::pair<std::string, Scenario>> points = [] {
    std::vector<std::pair<std::string, Scenario>> all;
    Scenario boot = boot_with({});
    Scenario boot_ephemeral = boot_with({.ephemeral = true, .start = false});
    Scenario boot_started = boot_with({.ephemeral = false, .start = true});
    for (const char* point :
         {"boot.locked", "probe.directio.before_create", "probe.directio.created", "boot.building.before_mkdir",
          "boot.building.created", "boot.marker.before_create", "boot.marker.created", "boot.root.before_acquire",
          "fetch.download.before", "fetch.download.first_chunk_written", "fetch.download.done",
          "fetch.convert.before", "fetch.convert.done", "fetch.convert.synced", "fetch.publish.before_info",
          "fetch.publish.info_written", "fetch.publish.renamed", "boot.root.base_acquired", "overlay.file_created",
          "boot.root.overlay_created", "boot.kernel.fetched", "boot.swap.before_base", "swap.part_created",
          "swap.mkswap_done", "swap.published", "boot.swap.base_ready", "boot.swap.overlay_created",
          "boot.disk_info.written", "boot.libvirt_xml.written", "boot.synced", "boot.directory.renamed",
          "boot.directory.published", "boot.define.before", "boot.define.after", "boot.marker.removed"}) {
      all.emplace_back(point, boot);
    }
    for (const char* point : {"boot.ephemeral.before_base", "ephemeral.part_created", "ephemeral.mkfs_done",
                              "ephemeral.published", "boot.ephemeral.base_ready", "boot.ephemeral.overlay_created"}) {
      all.emplace_back(point, boot_ephemeral);
    }
    all.emplace_back("boot.start.after", boot_started);
    for (const char* point : {"boot.rollback.before_undefine", "boot.rollback.pending_recorded"}) {
      all.emplace_back(point, rollback_killed);
    }
    for (const char* point :
         {"delete.begin", "delete.marked", "delete.destroyed", "delete.undefined", "delete.renamed", "delete.removed"}) {
      all.emplace_back(point, delete_killed);
    }
    for (const char* point : {"prune.locked", "prune.base_removed", "prune.info_removed"}) {
      all.emplace_back(point, prune_killed);
    }
    for (const char* point : {"repair.begin", "repair.removed_one", "repair.base_directory_done",
                              "repair.building.locked"}) {
      all.emplace_back(point, repair_killed);
    }
    for (const char* point : {"reconcile.begin", "reconcile.unfinished.before_undefine",
                              "reconcile.unfinished.undefined", "reconcile.unfinished.removed"}) {
      all.emplace_back(point, reconcile_killed);
    }
    for (const char* point : {"recover.before_define", "recover.defined"}) all.emplace_back(point, recover_killed);
    for (const char* point : {"kilnd.start.settings_loaded", "kilnd.start.locked", "kilnd.start.listening",
                              "kilnd.start.reconciled"}) {
      all.emplace_back(point, kilnd_start_killed);
    }
    for (const char* point : {"kilnd.reload.begin", "kilnd.reload.applied"}) {
      all.emplace_back(point, kilnd_reload_killed);
    }
    // Needs a broker: tests/bus/test_bus.cpp kills kilnd there and checks
    // the redelivered request is answered with the same operation.
    all.emplace_back("bus.request.replied", [](const std::string&) {});
    return all;
  }();
  return points;
}

// Runs the matrix's points whose names start with one of `prefixes`.
void run_points(const std::vector<std::string>& prefixes) {
  int ran = 0;
  for (const auto& [point, scenario] : matrix()) {
    bool wanted = false;
    for (const auto& prefix : prefixes) wanted = wanted || point.rfind(prefix, 0) == 0;
    if (!wanted) continue;
    INFO("failpoint " << point);
    scenario(point);
    ++ran;
  }
  REQUIRE(ran > 0);
}

}  // namespace

TEST_CASE("every failpoint in the sources is in the matrix, and there are at least 50") {
  std::set<std::string> in_matrix;
  for (const auto& [point, scenario] : matrix()) REQUIRE(in_matrix.insert(point).second);  // each once
  // The failpoints in Ceph's steps are the RBD crash matrix's (tests/integration/test_rbd_crash.cpp),
  // which checks that it has every one of them the same way.
  std::set<std::string> in_sources = kiln::test::failpoints_in_sources(KILN_SOURCE_DIR);
  std::erase_if(in_sources, [](const std::string& point) { return point.rfind("rbd.", 0) == 0; });
  REQUIRE(in_sources == in_matrix);
  REQUIRE(in_matrix.size() >= 50);
}

TEST_CASE("a boot killed at any point before its fetch leaves nothing a reconcile keeps, and boots on retry") {
  run_points({"boot.locked", "probe.", "boot.building.", "boot.marker.before_create", "boot.marker.created",
              "boot.root.before_acquire"});
}

TEST_CASE("a boot killed anywhere in the fetch, conversion or publication of its base") {
  run_points({"fetch."});
}

TEST_CASE("a boot killed while building disks, disk.info and libvirt.xml") {
  run_points({"boot.root.base_acquired", "overlay.", "boot.root.overlay_created", "boot.kernel.", "boot.swap.",
              "swap.", "boot.disk_info.", "boot.libvirt_xml.", "boot.synced"});
}

TEST_CASE("a boot killed while building its ephemeral disk") {
  run_points({"boot.ephemeral.", "ephemeral."});
}

TEST_CASE("a boot killed around the rename into place, the define and the start") {
  run_points({"boot.directory.", "boot.define.", "boot.start.", "boot.marker.removed"});
}

TEST_CASE("a boot killed while undoing a definition libvirt was lost after") {
  run_points({"boot.rollback."});
}

TEST_CASE("delete killed at every step is finished by reconcile or the retried delete") {
  run_points({"delete."});
}

TEST_CASE("prune and cache repair killed at every step") { run_points({"prune.", "repair."}); }

TEST_CASE("reconcile and recover killed at every step") { run_points({"reconcile.", "recover."}); }

TEST_CASE("kilnd killed during its start and during a reload") { run_points({"kilnd."}); }
