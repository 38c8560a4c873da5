// lib/rbd against a real single-node Ceph (the `ceph` fixture, tools/peers/ceph): kiln connects as client.kiln
// with nova's caps (rbd on vms, read-only rbd on images), as a compute host would; the tests make Glance's side
// (an image in `images`, a snapshot, its protection) with the rbd command as client.admin, and judge with it.
// Budget: the whole file runs in about 10 s (each test a few librados connections and rbd commands).
#include <catch2/catch.hpp>
#include <signal.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "assertions.h"
#include "ceph_support.h"
#include "kiln/rbd/cluster.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/rbd/location.h"
#include "kiln/util/layout.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace {

using kiln::ErrorCode;
using namespace kiln::rbd;

constexpr std::uint64_t kMiB = 1024 * 1024;

using kiln::test::ceph;
using kiln::test::connect_as_kiln;
using kiln::test::rbd_admin;
using kiln::test::rbd_exists;
using kiln::test::rbd_info;

// What Glance's rbd store leaves: images/<id> of `size_mb`, snapshot "snap", protected unless told.
Location glance_image(std::uint64_t size_mb, bool protect = true) {
  std::string id = kiln::test::random_uuid();
  rbd_admin({"create", "--size", std::to_string(size_mb) + "M", "images/" + id});
  rbd_admin({"snap", "create", "images/" + id + "@snap"});
  if (protect) rbd_admin({"snap", "protect", "images/" + id + "@snap"});
  return Location{ceph().fsid, "images", id, "snap"};
}

// The cluster's own conf and keyring, with a monitor address nothing listens on.
std::filesystem::path dead_monitor_conf(const kiln::test::ScratchDir& scratch) {
  std::ifstream in(ceph().conf);
  std::string conf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto mon = conf.find("mon host = ");
  REQUIRE(mon != std::string::npos);
  conf.replace(mon, conf.find('\n', mon) - mon, "mon host = v1:127.0.0.1:9");
  kiln::test::write_text(scratch / "ceph.conf", conf);
  return scratch / "ceph.conf";
}

}  // namespace

TEST_CASE("kiln connects as nova's user and reads the cluster's fsid", "[rbd]") {
  Cluster cluster = connect_as_kiln();
  REQUIRE(cluster.fsid() == ceph().fsid);
  Pool vms = cluster.open_pool("vms");
  REQUIRE(vms.name() == "vms");
  REQUIRE_KILN_ERROR_MENTIONS(cluster.open_pool("no-such-pool"), ErrorCode::kRbdError, "no-such-pool");
}

TEST_CASE("a conf whose monitor does not answer fails with rbd_error within the connect timeout", "[rbd]") {
  kiln::test::ScratchDir scratch;
  ConnectOptions options;
  options.ceph_conf = dead_monitor_conf(scratch);
  options.user = "kiln";
  options.connect_timeout = std::chrono::seconds(1);
  REQUIRE_KILN_ERROR_MENTIONS(Cluster::connect(options), ErrorCode::kRbdError, "connect to the Ceph cluster");
  options.ceph_conf = scratch / "missing.conf";
  REQUIRE_KILN_ERROR_MENTIONS(Cluster::connect(options), ErrorCode::kRbdError, "missing.conf");
}

TEST_CASE("the process shares one connection per conf and user, remembers a failed connect, and exits cleanly",
          "[rbd]") {
  ConnectOptions options;
  options.ceph_conf = ceph().conf;
  options.user = "kiln";
  auto first = shared_cluster(options);
  REQUIRE(first->fsid() == ceph().fsid);
  REQUIRE(shared_cluster(options) == first);
  options.user = "";  // client.admin: another connection
  auto admin = shared_cluster(options);
  REQUIRE(admin != first);
  REQUIRE(admin->fsid() == ceph().fsid);
  // A monitor nothing listens on: the first call waits out the timeout, the next fails at once.
  kiln::test::ScratchDir scratch;
  options.ceph_conf = dead_monitor_conf(scratch);
  options.connect_timeout = std::chrono::seconds(1);
  REQUIRE_KILN_ERROR(shared_cluster(options), ErrorCode::kRbdError);
  auto started = std::chrono::steady_clock::now();
  REQUIRE_KILN_ERROR_MENTIONS(shared_cluster(options), ErrorCode::kRbdError, "connect to the Ceph cluster");
  REQUIRE(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(500));
  // At exit the shared clusters are shut down before OpenSSL tears itself down: under ASan a wrong order is
  // a leak report that fails this test (the 904-byte report of issue 18).
}

TEST_CASE("a protected snapshot in Glance's pool is cloned into vms as <uuid>_disk whose parent is that snapshot",
          "[rbd]") {
  Location base = glance_image(64);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();

  ImageInfo disk = clone_root_disk(cluster, base, vms, uuid, 0);

  REQUIRE(disk.name == uuid + "_disk");
  REQUIRE(disk.size_bytes == 64 * kMiB);
  REQUIRE(disk.parent == Parent{"images", base.image, "snap"});
  // The rbd command agrees: a clone (a parent, no copy) of exactly that snapshot.
  nlohmann::json info = rbd_info("vms/" + uuid + "_disk");
  INFO(info.dump());
  REQUIRE(info["parent"]["pool"] == "images");
  REQUIRE(info["parent"]["image"] == base.image);
  REQUIRE(info["parent"]["snapshot"] == "snap");
  REQUIRE(info["size"] == 64 * kMiB);
  // And kiln's listing shows the chain.
  bool listed = false;
  for (const ImageInfo& image : vms.list()) {
    if (image.name == disk.name) {
      listed = true;
      REQUIRE(image.parent == disk.parent);
    }
  }
  REQUIRE(listed);
  // A second clone for the same instance is a conflict, and leaves the first alone.
  REQUIRE_KILN_ERROR(clone_root_disk(cluster, base, vms, uuid, 0), ErrorCode::kConflict);
  REQUIRE(rbd_info("vms/" + uuid + "_disk")["parent"]["image"] == base.image);
  REQUIRE(remove_instance_images(vms, uuid) == std::vector<std::string>{uuid + "_disk"});
}

TEST_CASE("an unprotected snapshot is refused and nothing is cloned", "[rbd]") {
  Location base = glance_image(16, false);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();
  REQUIRE(cluster.open_pool("images").snapshot(base.image, "snap").exists);
  REQUIRE_FALSE(cluster.open_pool("images").snapshot(base.image, "snap").is_protected);

  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, base, vms, uuid, 0), ErrorCode::kRbdSnapshotUnprotected,
                              base.spec());
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  // Once Glance protects it, the same call clones.
  rbd_admin({"snap", "protect", "images/" + base.image + "@snap"});
  REQUIRE(clone_root_disk(cluster, base, vms, uuid, 0).parent == Parent{"images", base.image, "snap"});
  remove_instance_images(vms, uuid);
}

TEST_CASE("a location in another cluster, or of a missing snapshot or image, is refused and nothing is cloned",
          "[rbd]") {
  Location base = glance_image(16);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();

  Location elsewhere = base;
  elsewhere.fsid = kiln::test::random_uuid();
  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, elsewhere, vms, uuid, 0), ErrorCode::kRbdNotSameCluster,
                              elsewhere.fsid);
  REQUIRE_KILN_ERROR(cluster.check_same_cluster(elsewhere), ErrorCode::kRbdNotSameCluster);
  cluster.check_same_cluster(base);  // the same location with this cluster's fsid is fine

  Location no_snapshot = base;
  no_snapshot.snapshot = "other";
  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, no_snapshot, vms, uuid, 0), ErrorCode::kNotFound, "other");
  Location no_image = base;
  no_image.image = kiln::test::random_uuid();
  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, no_image, vms, uuid, 0), ErrorCode::kNotFound, no_image.image);
  Location no_pool = base;
  no_pool.pool = "glance-images";
  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, no_pool, vms, uuid, 0), ErrorCode::kRbdError, "glance-images");
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
}

TEST_CASE("malformed or hostile Glance locations are refused with rbd_location_invalid", "[rbd]") {
  const std::string fsid = "0f9d8a36-7f40-4c4e-9d0b-6f1a2b3c4d5e";
  const std::string hostile[] = {
      "",
      "rbd://",
      "rbd:/" + fsid + "/images/img/snap",
      "RBD://" + fsid + "/images/img/snap",
      "file:///var/lib/glance/images/img",
      "http://" + fsid + "/images/img/snap",
      "rbd://img",                                   // Glance's old one-component form: not a snapshot
      "rbd://" + fsid + "/images/img",               // three components
      "rbd://" + fsid + "/images/img/snap/extra",    // five
      "rbd://" + fsid + "/images/img/snap/",         // a trailing slash is a fifth, empty one
      "rbd://" + fsid + "//img/snap",                // empty pool
      "rbd://" + fsid + "/images//snap",             // empty image
      "rbd://" + fsid + "/images/img/",              // empty snapshot
      "rbd:///images/img/snap",                      // empty fsid
      "rbd://not-a-uuid/images/img/snap",
      "rbd://" + fsid.substr(1) + "/images/img/snap",
      "rbd://" + fsid + "/images/i%2Fmg/snap",       // an escaped '/' in a name
      "rbd://" + fsid + "/images/img%40x/snap",      // an escaped '@': <pool>/<image>@<snap> would be ambiguous
      "rbd://" + fsid + "/images/img%3Aid%3Dadmin/snap",  // ':' is QEMU's rbd option separator
      "rbd://" + fsid + "/images/img%5C/snap",       // '\' is its escape
      "rbd://" + fsid + "/images/img%00x/snap",      // NUL would cut the name librados sees
      "rbd://" + fsid + "/images/img%0A/snap",       // a newline
      "rbd://" + fsid + "/images/img%20x/snap",      // a space
      "rbd://" + fsid + "/images/img%7F/snap",       // DEL
      "rbd://" + fsid + "/images/%C3%A9/snap",       // non-ASCII
      "rbd://" + fsid + "/images/img%2/snap",        // a short escape
      "rbd://" + fsid + "/images/img%/snap",
      "rbd://" + fsid + "/images/img%zz/snap",
      "rbd://" + fsid + "/images/img%2f/snap",       // lower-case hex: Python writes upper case
      "rbd://" + fsid + "/images/%41/snap",          // an escaped 'A': Glance writes it as itself
      "rbd://" + fsid + "/images/img+x/snap",        // a raw byte Glance would have escaped
      "rbd://" + fsid + "/images/img x/snap",
      "rbd://" + fsid + "/images/img@snap/snap",
      "rbd://" + fsid + "/ima\nges/img/snap",
      "rbd://" + fsid + "/images/img/snap?x=1",
      "rbd://" + fsid + "/images/img/snap#x",
      "rbd://" + fsid + "/../img/snap",
      "rbd://" + fsid + "/images/./snap",
      "rbd://" + fsid + "/images/" + std::string(256, 'a') + "/snap",  // a name over 255 bytes
      "rbd://" + fsid + "/images/" + std::string(1100, 'a') + "/snap",  // a location over 1024 bytes
      "rbd://" + fsid + std::string("/images/im\0g/snap", 17),
  };
  for (const std::string& url : hostile) {
    INFO(url);
    REQUIRE_KILN_ERROR(parse_location(url), ErrorCode::kRbdLocationInvalid);
  }
  // The embedded NUL above really is in the string (not cut at it by the literal).
  REQUIRE(hostile[std::size(hostile) - 1].size() == 6 + fsid.size() + 17);
}

TEST_CASE("Glance's own locations parse, escapes decoded, and format back to the same text", "[rbd]") {
  const std::string fsid = "0f9d8a36-7f40-4c4e-9d0b-6f1a2b3c4d5e";
  Location plain = parse_location("rbd://" + fsid + "/images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11/snap");
  REQUIRE(plain == Location{fsid, "images", "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11", "snap"});
  REQUIRE(plain.spec() == "images/c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11@snap");
  // What urllib.parse.quote('glance+images', safe='') writes, and the unreserved "_.-~" as themselves.
  std::string escaped = "rbd://" + fsid + "/glance%2Bimages/a_b.c-d~e/snap%21";
  Location decoded = parse_location(escaped);
  REQUIRE(decoded == Location{fsid, "glance+images", "a_b.c-d~e", "snap!"});
  REQUIRE(format_location(decoded) == escaped);
  // An upper-case fsid is the same cluster's: compared in canonical form.
  std::string upper = "0F9D8A36-7F40-4C4E-9D0B-6F1A2B3C4D5E";
  REQUIRE(parse_location("rbd://" + upper + "/images/img/snap").fsid == fsid);
}

TEST_CASE("the clone grows to the flavor's root size, and a smaller root size is refused before anything is cloned",
          "[rbd]") {
  Location base = glance_image(64);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");

  std::string grown = kiln::test::random_uuid();
  ImageInfo disk = clone_root_disk(cluster, base, vms, grown, 256 * kMiB);
  REQUIRE(disk.size_bytes == 256 * kMiB);
  REQUIRE(rbd_info("vms/" + grown + "_disk")["size"] == 256 * kMiB);
  REQUIRE(rbd_info("vms/" + grown + "_disk")["parent"]["image"] == base.image);
  REQUIRE(rbd_info("images/" + base.image)["size"] == 64 * kMiB);  // the parent is untouched

  std::string small = kiln::test::random_uuid();
  REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, base, vms, small, 32 * kMiB), ErrorCode::kFlavorDiskTooSmall,
                              "smaller");
  REQUIRE_FALSE(rbd_exists("vms", small + "_disk"));

  // Growing an existing disk never shrinks it; growing to its own size changes nothing.
  REQUIRE_KILN_ERROR_MENTIONS(vms.grow(grown + "_disk", 128 * kMiB), ErrorCode::kFlavorDiskTooSmall, "never shrunk");
  vms.grow(grown + "_disk", 256 * kMiB);
  REQUIRE(rbd_info("vms/" + grown + "_disk")["size"] == 256 * kMiB);
  vms.grow(grown + "_disk", 512 * kMiB);
  REQUIRE(vms.stat(grown + "_disk").size_bytes == 512 * kMiB);
  REQUIRE_KILN_ERROR(vms.grow(kiln::test::random_uuid() + "_disk", kMiB), ErrorCode::kNotFound);
  remove_instance_images(vms, grown);
}

TEST_CASE("removing an instance's images removes its <uuid>_* images and nothing else", "[rbd]") {
  Location base = glance_image(16);
  Cluster cluster = connect_as_kiln();
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();
  std::string neighbour = kiln::test::random_uuid();
  clone_root_disk(cluster, base, vms, uuid, 0);
  clone_root_disk(cluster, base, vms, neighbour, 0);
  std::string swap = instance_image_name(uuid, kiln::layout::kSwapDisk);
  std::string local = instance_image_name(uuid, kiln::layout::kEphemeralDisk);
  REQUIRE(swap == uuid + "_disk.swap");
  rbd_admin({"create", "--size", "8M", "vms/" + swap});
  rbd_admin({"create", "--size", "8M", "vms/" + local});
  // Not the instance's: the uuid without nova's "_" separator, and the uuid as a suffix.
  rbd_admin({"create", "--size", "8M", "vms/" + uuid + "disk"});
  rbd_admin({"create", "--size", "8M", "vms/x" + uuid + "_disk"});

  std::vector<std::string> removed = remove_instance_images(vms, uuid);

  REQUIRE(removed == std::vector<std::string>{uuid + "_disk", local, swap});
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE_FALSE(rbd_exists("vms", swap));
  REQUIRE_FALSE(rbd_exists("vms", local));
  REQUIRE(rbd_exists("vms", neighbour + "_disk"));
  REQUIRE(rbd_exists("vms", uuid + "disk"));
  REQUIRE(rbd_exists("vms", "x" + uuid + "_disk"));
  REQUIRE(rbd_exists("images", base.image));  // the parent stays: it is Glance's
  // Nothing left is no error; an instance id that is not a UUID is refused before anything is listed.
  REQUIRE(remove_instance_images(vms, uuid).empty());
  REQUIRE_KILN_ERROR(remove_instance_images(vms, "../" + uuid), ErrorCode::kInvalidUuid);
  remove_instance_images(vms, neighbour);
  rbd_admin({"rm", "vms/" + uuid + "disk"});
  rbd_admin({"rm", "vms/x" + uuid + "_disk"});
}

TEST_CASE("stat and exists see images, and a missing image is not_found", "[rbd]") {
  Location base = glance_image(16);
  Cluster cluster = connect_as_kiln();
  Pool images = cluster.open_pool("images");
  REQUIRE(images.image_exists(base.image));
  REQUIRE_FALSE(images.image_exists(kiln::test::random_uuid()));
  ImageInfo info = images.stat(base.image);
  REQUIRE(info.size_bytes == 16 * kMiB);
  REQUIRE_FALSE(info.parent.has_value());
  REQUIRE_KILN_ERROR(images.stat("missing"), ErrorCode::kNotFound);
  SnapshotState state = images.snapshot(base.image, "snap");
  REQUIRE(state.exists);
  REQUIRE(state.is_protected);
  REQUIRE(state.size_bytes == 16 * kMiB);
  REQUIRE_FALSE(images.snapshot(base.image, "nope").exists);
  // nova's user may read Glance's pool, not write it.
  REQUIRE_KILN_ERROR(images.remove(base.image), ErrorCode::kRbdError);
  REQUIRE(rbd_exists("images", base.image));
}

namespace {

// SIGSTOPs the fixture's OSD for its lifetime (SIGCONT on every exit path, a failed REQUIRE included), so
// that every OSD op sits unanswered: what a PG that never becomes active, or a hung OSD, does to a client.
class StoppedOsd {
 public:
  StoppedOsd() {
    std::ifstream in(std::string(KILN_CEPH_DIR) + "/run/ceph-osd.0.pid");
    in >> pid_;
    REQUIRE(pid_ > 1);
    REQUIRE(::kill(pid_, SIGSTOP) == 0);
  }
  StoppedOsd(const StoppedOsd&) = delete;
  StoppedOsd& operator=(const StoppedOsd&) = delete;
  ~StoppedOsd() { ::kill(pid_, SIGCONT); }

 private:
  pid_t pid_ = 0;
};

}  // namespace

// Budget: about 6 s (each call waits out its 1 s op timeout, an open a few in turn). Runs alone
// (RESOURCE_LOCK ceph in tests/CMakeLists.txt): the stopped OSD would stall every other rbd test.
TEST_CASE("with the OSD stopped every RBD call fails with rbd_error after the op timeout instead of hanging",
          "[rbd]") {
  Location base = glance_image(16);
  ConnectOptions options;
  options.ceph_conf = ceph().conf;
  options.user = "kiln";
  options.connect_timeout = std::chrono::seconds(1);
  Cluster cluster = Cluster::connect(options);
  Pool images = cluster.open_pool("images");
  Pool vms = cluster.open_pool("vms");
  std::string uuid = kiln::test::random_uuid();
  {
    StoppedOsd stopped;
    // The image open (rbd_open_read_only) is where librbd 16.2.15 was seen to block for good.
    REQUIRE_KILN_ERROR_MENTIONS(images.stat(base.image), ErrorCode::kRbdError, "timed out");
    REQUIRE_KILN_ERROR_MENTIONS(images.snapshot(base.image, "snap"), ErrorCode::kRbdError, "timed out");
    REQUIRE_KILN_ERROR_MENTIONS(vms.list(), ErrorCode::kRbdError, "timed out");
    REQUIRE_KILN_ERROR_MENTIONS(clone_root_disk(cluster, base, vms, uuid, 0), ErrorCode::kRbdError, "timed out");
  }
  // Once the OSD runs again the same handle works: a timeout does not break the connection.
  REQUIRE(images.stat(base.image).size_bytes == 16 * kMiB);
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
}

TEST_CASE("the monitors of a ceph.conf are read in the form QEMU takes them (v1 address of each)", "[rbd]") {
  // The fixture's conf: mon host = [v2:127.0.0.1:<even>,v1:127.0.0.1:<odd>].
  std::vector<Monitor> monitors = conf_monitors(ceph().conf);
  REQUIRE(monitors.size() == 1);
  REQUIRE(monitors[0].host == "127.0.0.1");
  REQUIRE(monitors[0].port % 2 == 1);
  REQUIRE(monitors[0].port > 13300);
  REQUIRE_KILN_ERROR_MENTIONS(conf_monitors("/nonexistent/ceph.conf"), ErrorCode::kRbdError, "/nonexistent/ceph.conf");

  // Every form Ceph writes or reads.
  using M = std::vector<Monitor>;
  REQUIRE(parse_mon_host("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300/0,v1:10.0.0.2:6789/0]") ==
          M{{"10.0.0.1", 6789}, {"10.0.0.2", 6789}});
  REQUIRE(parse_mon_host("[v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:10.0.0.2:3300,v1:10.0.0.2:6789]").size() == 2);
  REQUIRE(parse_mon_host("10.0.0.1,10.0.0.2:6790; mon3.example.org") ==
          M{{"10.0.0.1", 6789}, {"10.0.0.2", 6790}, {"mon3.example.org", 6789}});
  REQUIRE(parse_mon_host("v1:10.0.0.1:6789,v2:10.0.0.2:3300") == M{{"10.0.0.1", 6789}});
  REQUIRE(parse_mon_host("[::1]:6789,[fd00::2]") == M{{"::1", 6789}, {"fd00::2", 6789}});
  REQUIRE(parse_mon_host("[v2:[::1]:3300,v1:[::1]:6789]") == M{{"::1", 6789}});
  for (const char* bad : {"", " , ", "v2:10.0.0.1:3300", "[v2:10.0.0.1:3300]", "10.0.0.1:http", "10.0.0.1:70000",
                          "[v2:10.0.0.1:3300,v1:10.0.0.1:6789", "10.0.0.1:6789'/><x", "a b\"c", "[::1"}) {
    INFO(bad);
    REQUIRE_KILN_ERROR(parse_mon_host(bad), ErrorCode::kRbdError);
  }
}
