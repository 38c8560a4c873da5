// The RBD crash matrix: kilnctl killed (SIGKILL, by its own failpoint, kiln/util/failpoint.h) at every named
// point of the Ceph steps of a boot (rbd.*: the pool base's import, the clones), on the real Ceph and Glance of
// the peers-rbd fixture. After each death:
//   - the process died at the point, with the failpoint's signature;
//   - nothing half-written sits under a final name: kiln-base-<sha1> either does not exist (the .part does) or
//     has its protected snapshot holding exactly the image;
//   - `kilnctl instance reconcile` removes the half-built directory and the instance's clones;
//   - the retried boot succeeds (after the dead holder's import lock expires, at most kImportLockLifetime), and
//     its root disk is a clone of the complete pool base.
// Every rbd.* point in the sources is here, and every point here in the sources (the file matrix in
// tests/crash has the others). Budget: about 35 s per point where the dead process held the import lock
// (its 30 s lifetime), a few seconds for the others.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "ceph_support.h"
#include "failpoints.h"
#include "kiln/cache/image_cache.h"
#include "kiln/util/subprocess.h"
#include "peers.h"
#include "rbd_boot_support.h"
#include "scratch.h"

namespace {

using kiln::test::kilnctl;
using kiln::test::rbd_admin;
using kiln::test::rbd_exists;
using kiln::test::run_ok;
using nlohmann::json;

const std::set<std::string> kRbdPoints = {"rbd.pool_base.part_written", "rbd.pool_base.protected",
                                          "rbd.pool_base.published", "rbd.clone.created"};

std::vector<std::string> boot_args(const std::filesystem::path& config, const std::string& image,
                                   const std::string& uuid) {
  return {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid", uuid, "--vcpus", "1",
          "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "8", "--no-start"};
}

// The pool base, if it exists under its final name, is whole: protected "snap", byte for byte the image.
void require_whole_or_absent(const kiln::test::ScratchDir& scratch, const std::string& base,
                             const std::filesystem::path& qcow2) {
  if (!rbd_exists("vms", base)) return;
  json snaps = json::parse(rbd_admin({"snap", "ls", "--format", "json", "vms/" + base}));
  REQUIRE(snaps.size() == 1);
  REQUIRE(snaps[0]["name"] == "snap");
  REQUIRE(kiln::test::rbd_info("vms/" + base + "@snap")["protected"] == "true");
  std::filesystem::path exported = scratch / "exported.raw";
  std::filesystem::remove(exported);
  rbd_admin({"export", "vms/" + base + "@snap", exported.string()});
  run_ok({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow2.string(), exported.string()});
}

void crash_and_retry(const std::string& point) {
  INFO("failpoint " << point);
  kiln::test::ScratchDir scratch;
  std::filesystem::path qcow2 = scratch / "image.qcow2";
  kiln::test::make_qcow2(qcow2, "16M");
  std::string image = kiln::test::upload_to_file_store(qcow2, "qcow2");  // not in Ceph: a pool base is imported
  std::string base = "kiln-base-" + kiln::cache::base_name_for(image);
  std::filesystem::path config = kiln::test::write_rbd_config(scratch, kiln::test::ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();

  std::vector<std::string> argv = {"env", "KILN_FAILPOINT=" + point, KILN_KILNCTL, "--json", "--glance",
                                   kiln::test::peers_env().at("GLANCE_URL"), "--libvirt-uri",
                                   kiln::test::peers_env().at("LIBVIRT_URI"), "--virt-type", "qemu",
                                   "--instances-path", instances.string()};
  auto args = boot_args(config, image, uuid);
  argv.insert(argv.end(), args.begin(), args.end());
  auto killed = kiln::run(kiln::Command(argv, {}, std::chrono::seconds(60)));
  INFO(killed.out << killed.err);
  REQUIRE(killed.exit_code != 0);
  REQUIRE(killed.err.find("kiln failpoint " + point + " reached") != std::string::npos);
  if (point == "rbd.pool_base.part_written" || point == "rbd.pool_base.protected") {
    REQUIRE(rbd_exists("vms", base + ".part"));
    REQUIRE_FALSE(rbd_exists("vms", base));
  }
  if (point == "rbd.clone.created") REQUIRE(rbd_exists("vms", uuid + "_disk"));
  require_whole_or_absent(scratch, base, qcow2);

  auto reconciled = kilnctl(instances, {"--config", config.string(), "instance", "reconcile"});
  INFO(reconciled.output.dump() << "\n" << reconciled.err);
  REQUIRE(reconciled.exit_code == 0);
  if (point == "rbd.clone.created") {  // the clone of a boot that died before its directory was published
    json finding;
    for (const auto& each : reconciled.output["findings"]) {
      if (each["uuid"] == uuid) finding = each;
    }
    REQUIRE(finding["kind"] == "half_built");
    REQUIRE(finding["changed"] == true);
    REQUIRE(finding["action"].get<std::string>().find("removed its RBD images " + uuid + "_disk") !=
            std::string::npos);
  }
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk.swap"));

  auto retried = kilnctl(instances, boot_args(config, image, uuid));
  INFO(retried.output.dump() << "\n" << retried.err);
  REQUIRE(retried.exit_code == 0);
  REQUIRE(retried.output["disk"]["parent"] == "vms/" + base + "@snap");
  REQUIRE_FALSE(rbd_exists("vms", base + ".part"));
  require_whole_or_absent(scratch, base, qcow2);
  REQUIRE(rbd_exists("vms", base));
  REQUIRE(kilnctl(instances, {"--config", config.string(), "--direct", "delete", uuid}).exit_code == 0);
}

}  // namespace

TEST_CASE("every rbd failpoint in the sources is in the RBD crash matrix", "[rbd]") {
  std::set<std::string> in_sources = kiln::test::failpoints_in_sources(KILN_SOURCE_DIR);
  std::erase_if(in_sources, [](const std::string& point) { return point.rfind("rbd.", 0) != 0; });
  REQUIRE(in_sources == kRbdPoints);
}

TEST_CASE("a boot killed after writing its pool base's data leaves only the .part, which the retry replaces",
          "[rbd]") {
  crash_and_retry("rbd.pool_base.part_written");
}

TEST_CASE("a boot killed after snapshotting and protecting its pool base leaves only the .part", "[rbd]") {
  crash_and_retry("rbd.pool_base.protected");
}

TEST_CASE("a boot killed once its pool base is published, its import lock still held, is retried at once", "[rbd]") {
  crash_and_retry("rbd.pool_base.published");
}

TEST_CASE("a boot killed between cloning its root disk and growing it leaves a clone reconcile removes", "[rbd]") {
  crash_and_retry("rbd.clone.created");
}
