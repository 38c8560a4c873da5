// images_type = rbd end to end: Glance with an RBD store (tools/peers/start --ceph, fixture peers-rbd) in front
// of the single-node Ceph (fixture ceph), kilnctl --direct booting on the private libvirtd with QEMU's TCG.
// The guest's root disk is a clone of Glance's snapshot: nothing is downloaded, the instance directory holds no
// disk, and a delete removes the clone; kilnctl cache ls and prune know the pool bases. Budget: about 15 s for the
// file (the boot's QEMU start is most of it).
#include <signal.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "assertions.h"
#include "ceph_support.h"
#include "rbd_boot_support.h"
#include "kiln/cache/image_cache.h"
#include "kiln/util/subprocess.h"
#include "kilnd_process.h"
#include "peers.h"
#include "scratch.h"

namespace {

using kiln::test::kilnctl;
using kiln::test::virsh;
using nlohmann::json;

using kiln::test::ceph;
using kiln::test::ceph_secret;
using kiln::test::glance_log;
using kiln::test::peers_env;
using kiln::test::rbd_admin;
using kiln::test::rbd_exists;
using kiln::test::rbd_info;
using kiln::test::read_text;
using kiln::test::run_ok;
using kiln::test::upload_to_ceph;
using kiln::test::upload_to_file_store;
using kiln::test::write_rbd_config;

}  // namespace

TEST_CASE("images_type = rbd boots a Glance RBD image as a clone: nothing downloaded, the guest runs, delete removes it",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::string image = upload_to_ceph(scratch, "16M");
  json record = json::parse(run_ok({"curl", "-sS", peers_env().at("GLANCE_URL") + "/v2/images/" + image}));
  INFO(record.dump());
  REQUIRE(record["status"] == "active");
  REQUIRE(record["direct_url"] == "rbd://" + ceph().fsid + "/images/" + image + "/snap");
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();

  auto booted = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid", uuid,
                                    "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
  INFO(booted.output.dump() << "\n" << booted.err);
  REQUIRE(booted.exit_code == 0);
  REQUIRE(booted.output["domain"]["state"] == "running");
  REQUIRE(booted.output["disk"]["rbd"] == "vms/" + uuid + "_disk");
  REQUIRE(booted.output["disk"]["parent"] == "images/" + image + "@snap");
  REQUIRE(booted.output["disk"]["virtual_size"] == 1024 * 1024 * 1024);

  // Nothing downloaded: Glance was asked for the record, never for the data; no base in the cache.
  std::string log = glance_log();
  REQUIRE(log.find("GET /v2/images/" + image + " ") != std::string::npos);
  REQUIRE(log.find("GET /v2/images/" + image + "/file") == std::string::npos);
  REQUIRE_FALSE(std::filesystem::exists(instances / "_base" / kiln::cache::base_name_for(image)));
  // The directory: no disk file, disk.info naming the RBD image, libvirt.xml with the network disk.
  std::filesystem::path directory = instances / uuid;
  REQUIRE_FALSE(std::filesystem::exists(directory / "disk"));
  REQUIRE(std::filesystem::exists(directory / "console.log"));
  REQUIRE(json::parse(read_text(directory / "disk.info")) ==
          json{{"rbd:vms/" + uuid + "_disk", "raw"}});
  std::string xml = read_text(directory / "libvirt.xml");
  REQUIRE(xml.find("protocol=\"rbd\" name=\"vms/" + uuid + "_disk\"") != std::string::npos);
  // The pool holds the clone, whose parent is Glance's protected snapshot.
  REQUIRE(rbd_exists("vms", uuid + "_disk"));
  json info = json::parse(rbd_admin({"info", "--format", "json", "vms/" + uuid + "_disk"}));
  REQUIRE(info["parent"]["pool"] == "images");
  REQUIRE(info["parent"]["image"] == image);
  REQUIRE(info["parent"]["snapshot"] == "snap");
  // QEMU really has the image open (a watcher on its header): the guest's disk is the clone.
  std::string status = rbd_admin({"status", "--format", "json", "vms/" + uuid + "_disk"});
  INFO(status);
  REQUIRE(json::parse(status)["watchers"].size() == 1);

  auto deleted = kilnctl(instances, {"--config", config.string(), "--direct", "delete", uuid});
  INFO(deleted.output.dump() << "\n" << deleted.err);
  REQUIRE(deleted.exit_code == 0);
  REQUIRE(deleted.output["rbd_images"] == json::array({uuid + "_disk"}));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE(rbd_exists("images", image));  // Glance's image stays
  REQUIRE_FALSE(std::filesystem::exists(directory));
  REQUIRE(virsh({"dominfo", uuid}).exit_code != 0);
}

TEST_CASE("an image Glance keeps elsewhere is downloaded once into a pool base that every host clones, with swap and ephemeral disks cloned too",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  // A qcow2 image in Glance's file store: no rbd:// location, not raw.
  std::filesystem::path file = scratch / "plain.qcow2";
  run_ok({"qemu-img", "create", "-q", "-f", "qcow2", file.string(), "64M"});
  run_ok({"qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 0 2M", file.string()});
  std::string image = upload_to_file_store(file, "qcow2");
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::string base = "kiln-base-" + kiln::cache::base_name_for(image);
  std::vector<std::string> uuids;

  // Two hosts: two instances paths, one pool. The first downloads and writes the pool base, the second clones it.
  for (const char* host : {"host-a", "host-b"}) {
    std::filesystem::path instances = scratch / host;
    std::string uuid = uuids.emplace_back(kiln::test::random_uuid());
    auto booted = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid",
                                      uuid, "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "64",
                                      "--ephemeral-gb", "1"});
    INFO(host << ": " << booted.output.dump() << "\n" << booted.err);
    REQUIRE(booted.exit_code == 0);
    REQUIRE(booted.output["domain"]["state"] == "running");
    REQUIRE(booted.output["disk"]["rbd"] == "vms/" + uuid + "_disk");
    REQUIRE(booted.output["disk"]["parent"] == "vms/" + base + "@snap");
    REQUIRE(booted.output["disk"]["virtual_size"] == 1024 * 1024 * 1024);
    REQUIRE(booted.output["swap"]["rbd"] == "vms/" + uuid + "_disk.swap");
    REQUIRE(booted.output["swap"]["parent"] == "vms/kiln-base-swap_64@snap");
    REQUIRE(booted.output["ephemeral"]["rbd"] == "vms/" + uuid + "_disk.local");
    REQUIRE(booted.output["ephemeral"]["parent"].get<std::string>().rfind("vms/kiln-base-ephemeral_1_", 0) == 0);
    bool first = std::string(host) == "host-a";
    REQUIRE(booted.output["disk"]["pool_base_imported"] == first);
    REQUIRE(booted.output["disk"]["pool_base_waited_ms"].is_number());
    if (first) {
      REQUIRE(booted.output["base"]["downloaded_bytes"].get<std::uint64_t>() > 0);
      // What the import cost: the 2 MiB of data (zero blocks are not written), and its two steps' times.
      const json& import = booted.output["disk"]["pool_base_import"];
      REQUIRE(import["written_bytes"] == 2 * 1024 * 1024);
      REQUIRE(import["write_ms"].is_number());
      REQUIRE(import["publish_ms"].is_number());
    } else {
      REQUIRE(booted.output["base"].is_null());
      REQUIRE_FALSE(booted.output["disk"].contains("pool_base_import"));
    }
    std::filesystem::path directory = instances / uuid;
    REQUIRE_FALSE(std::filesystem::exists(directory / "disk"));
    REQUIRE_FALSE(std::filesystem::exists(directory / "disk.swap"));
    REQUIRE(json::parse(read_text(directory / "disk.info")) ==
            json{{"rbd:vms/" + uuid + "_disk", "raw"}, {"rbd:vms/" + uuid + "_disk.swap", "raw"},
                 {"rbd:vms/" + uuid + "_disk.local", "raw"}});
    std::string xml = read_text(directory / "libvirt.xml");
    for (const char* disk : {"_disk\"", "_disk.swap\"", "_disk.local\""}) {
      REQUIRE(xml.find("protocol=\"rbd\" name=\"vms/" + uuid + disk) != std::string::npos);
    }
    json info = json::parse(rbd_admin({"info", "--format", "json", "vms/" + uuid + "_disk"}));
    REQUIRE(info["parent"]["image"] == base);
    REQUIRE(json::parse(rbd_admin({"status", "--format", "json", "vms/" + uuid + "_disk.swap"}))["watchers"].size() == 1);
  }
  // One download for the cluster: Glance served the file once.
  std::string log = glance_log();
  std::size_t gets = 0;
  for (std::size_t at = 0; (at = log.find("GET /v2/images/" + image + "/file", at)) != std::string::npos; ++at) ++gets;
  REQUIRE(gets == 1);
  // The pool base holds the image's bytes, converted to raw.
  rbd_admin({"export", "vms/" + base + "@snap", (scratch / "exported.raw").string()});
  run_ok({"qemu-img", "compare", "-f", "qcow2", "-F", "raw", file.string(), (scratch / "exported.raw").string()});

  // A delete removes the instance's clones; the pool bases stay for the next boot.
  for (std::size_t i = 0; i < uuids.size(); ++i) {
    auto deleted = kilnctl(scratch / (i == 0 ? "host-a" : "host-b"),
                           {"--config", config.string(), "--direct", "delete", uuids[i]});
    INFO(deleted.output.dump() << "\n" << deleted.err);
    REQUIRE(deleted.exit_code == 0);
    REQUIRE(deleted.output["rbd_images"] ==
            json::array({uuids[i] + "_disk", uuids[i] + "_disk.local", uuids[i] + "_disk.swap"}));
  }
  REQUIRE(rbd_exists("vms", base));
  REQUIRE(rbd_exists("vms", "kiln-base-swap_64"));
}

namespace {

// kilnctl --direct boot --no-start: a 1 GiB root disk and `swap_mb` of swap, the domain defined; fails the test
// unless it succeeds.
void define_instance(const std::filesystem::path& instances, const std::filesystem::path& config,
                     const std::string& image, const std::string& uuid, const std::string& swap_mb) {
  auto booted = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid", uuid,
                                    "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", swap_mb,
                                    "--no-start"});
  INFO(booted.output.dump() << "\n" << booted.err);
  REQUIRE(booted.exit_code == 0);
}

// `rbd du`'s used bytes of one layer: the head of an image without snapshots, or one snapshot.
std::uint64_t rbd_du_used(const std::string& pool, const std::string& image, const std::string& snapshot) {
  std::string spec = pool + "/" + image + (snapshot.empty() ? "" : "@" + snapshot);
  json du = json::parse(rbd_admin({"du", "--format", "json", spec}));
  INFO(spec << ": " << du.dump());
  for (const auto& entry : du["images"]) {
    if (entry["name"] == image && entry.value("snapshot", "") == snapshot) return entry["used_size"];
  }
  FAIL("rbd du does not list " << spec);
  return 0;
}

}  // namespace

TEST_CASE("instance show and du give each RBD disk's clone chain down to Glance's snapshot and the bytes each layer holds as rbd du counts them",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::string image = upload_to_ceph(scratch, "16M");  // 1 MiB of data: one 4 MiB object in Glance's image
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();
  define_instance(instances, config, image, uuid, "24");
  // A guest's first write: 8 KiB at offset 0 copies up Glance's first 4 MiB object into the clone.
  rbd_admin({"bench", "--io-type", "write", "--io-size", "4096", "--io-total", "8192", "--io-pattern", "seq",
             "vms/" + uuid + "_disk"});

  auto shown = kilnctl(instances, {"--config", config.string(), "instance", "show", uuid});
  INFO(shown.output.dump() << "\n" << shown.err);
  REQUIRE(shown.exit_code == 0);
  std::map<std::string, json> disks;
  for (const auto& disk : shown.output["disks"]) disks[disk["name"]] = disk;
  REQUIRE(disks.size() == 2);
  REQUIRE(disks["disk"]["storage"] == "rbd");
  const json& root = disks["disk"]["backing_chain"];
  REQUIRE(root.size() == 2);
  REQUIRE(root[0]["rbd"] == "vms/" + uuid + "_disk");
  REQUIRE(root[0]["virtual_size"] == 1024 * 1024 * 1024);
  REQUIRE(root[1]["rbd"] == "images/" + image + "@snap");
  REQUIRE(root[1]["virtual_size"] == 16 * 1024 * 1024);
  const json& swap = disks["disk.swap"]["backing_chain"];
  REQUIRE(swap.size() == 2);
  REQUIRE(swap[0]["rbd"] == "vms/" + uuid + "_disk.swap");
  REQUIRE(swap[1]["rbd"] == "vms/kiln-base-swap_24@snap");
  // Each layer's bytes are rbd du's for that layer alone: the clone's own object, Glance's one object.
  REQUIRE(root[0]["physical_bytes"] == rbd_du_used("vms", uuid + "_disk", ""));
  REQUIRE(root[0]["physical_bytes"].get<std::uint64_t>() > 0);
  REQUIRE(root[1]["physical_bytes"] == rbd_du_used("images", image, "snap"));
  REQUIRE(root[1]["physical_bytes"].get<std::uint64_t>() > 0);
  REQUIRE(swap[0]["physical_bytes"] == 0);  // never written: the guest did not run
  REQUIRE(swap[1]["physical_bytes"] == rbd_du_used("vms", "kiln-base-swap_24", "snap"));

  auto text = kiln::run(kiln::Command({KILN_KILNCTL, "--config", config.string(), "--instances-path",
                                       instances.string(), "--libvirt-uri", peers_env().at("LIBVIRT_URI"), "instance",
                                       "show", uuid},
                                      {}, std::chrono::seconds(60)));
  INFO(text.out << text.err);
  REQUIRE(text.exit_code == 0);
  REQUIRE(text.out.find("rbd vms/" + uuid + "_disk: ") != std::string::npos);
  REQUIRE(text.out.find("cloned from images/" + image + "@snap: 16.0 MiB virtual") != std::string::npos);

  // du: the instance's bytes in the pool are its clones' own; the swap pool base (24 MB: this test's alone) is
  // freed by deleting it, Glance's image is not kiln's.
  auto du = kilnctl(instances, {"--config", config.string(), "du"});
  INFO(du.output.dump() << "\n" << du.err);
  REQUIRE(du.exit_code == 0);
  REQUIRE(du.output["pool"]["name"] == "vms");
  REQUIRE(du.output["instances"].size() == 1);
  const json& usage = du.output["instances"][0];
  std::uint64_t in_pool = rbd_du_used("vms", uuid + "_disk", "") + rbd_du_used("vms", uuid + "_disk.swap", "");
  REQUIRE(usage["rbd_bytes"] == in_pool);
  REQUIRE(usage["pool_bases"] == json::array({"kiln-base-swap_24"}));
  std::uint64_t swap_base = rbd_du_used("vms", "kiln-base-swap_24", "snap");
  REQUIRE(usage["freed_by_deleting"] == usage["own_bytes"].get<std::uint64_t>() + in_pool + swap_base);
  json listed;
  for (const auto& base : du.output["pool"]["bases"]) {
    if (base["name"] == "kiln-base-swap_24") listed = base;
  }
  REQUIRE(listed["bytes"] == swap_base);
  REQUIRE(listed["clones"] == 1);
  REQUIRE(listed["freed_by_deleting"] == 0);
  REQUIRE(kilnctl(instances, {"--config", config.string(), "--direct", "delete", uuid}).exit_code == 0);
}

TEST_CASE("instance recover re-defines an RBD instance from libvirt.xml only when its images are its own and exist",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::string image = upload_to_ceph(scratch, "8M");
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();
  define_instance(instances, config, image, uuid, "16");
  std::filesystem::path xml = instances / uuid / "libvirt.xml";
  const std::string original = read_text(xml);
  auto recover = [&] {
    REQUIRE(virsh({"undefine", uuid}).exit_code == 0);
    return kilnctl(instances, {"--config", config.string(), "instance", "recover", "--no-start", uuid});
  };
  // libvirt lost the domain (a reinstalled host): recover defines it again from the directory.
  auto recovered = recover();
  INFO(recovered.output.dump() << "\n" << recovered.err);
  REQUIRE(recovered.exit_code == 0);
  REQUIRE(recovered.output["already_defined"] == false);
  REQUIRE(virsh({"dominfo", uuid}).exit_code == 0);

  // A libvirt.xml that names another instance's image: refused, nothing defined.
  std::string other = kiln::test::random_uuid();
  rbd_admin({"create", "--size", "8M", "vms/" + other + "_disk"});
  std::string foreign = original;
  std::string own_name = "name=\"vms/" + uuid + "_disk\"";
  REQUIRE(foreign.find(own_name) != std::string::npos);
  foreign.replace(foreign.find(own_name), own_name.size(), "name=\"vms/" + other + "_disk\"");
  kiln::test::write_text(xml, foreign);
  auto refused = recover();
  INFO(refused.output.dump());
  REQUIRE(refused.exit_code != 0);
  REQUIRE(refused.output["error"]["code"] == "instance_broken");
  REQUIRE(refused.output["error"]["message"].get<std::string>().find("not one of its own") != std::string::npos);
  REQUIRE(virsh({"dominfo", uuid}).exit_code != 0);
  rbd_admin({"rm", "vms/" + other + "_disk"});

  // Its own libvirt.xml, but the swap image is gone from the pool: refused, naming it.
  kiln::test::write_text(xml, original);
  rbd_admin({"rm", "vms/" + uuid + "_disk.swap"});
  REQUIRE(virsh({"define", xml.string()}).exit_code == 0);  // so that recover() can undefine it first
  auto missing = recover();
  INFO(missing.output.dump());
  REQUIRE(missing.exit_code != 0);
  REQUIRE(missing.output["error"]["code"] == "instance_broken");
  REQUIRE(missing.output["error"]["message"].get<std::string>().find("vms/" + uuid + "_disk.swap is missing") !=
          std::string::npos);
  REQUIRE(kilnctl(instances, {"--config", config.string(), "--direct", "delete", uuid}).exit_code == 0);
}

TEST_CASE("images_type = rbd refuses an ISO and a missing secret before anything is created, and a failed boot removes its clones",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();
  std::filesystem::path iso_file = scratch / "image.iso";
  run_ok({"qemu-img", "create", "-q", "-f", "raw", iso_file.string(), "1M"});
  std::string iso = upload_to_file_store(iso_file, "iso");
  auto refused = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", iso, "--uuid", uuid,
                                     "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
  INFO(refused.output.dump() << "\n" << refused.err);
  REQUIRE(refused.exit_code != 0);
  REQUIRE(refused.output["error"]["code"] == "invalid_argument");
  REQUIRE(glance_log().find("GET /v2/images/" + iso + "/file") == std::string::npos);
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));

  // A boot that fails after its clones (libvirt refuses the definition: 512 vCPUs on a pc machine) removes
  // them and the directory again.
  std::string in_ceph = upload_to_ceph(scratch, "8M");
  auto undone = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", in_ceph, "--uuid",
                                    uuid, "--vcpus", "512", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "32"});
  INFO(undone.output.dump());
  REQUIRE(undone.exit_code != 0);
  REQUIRE(undone.output["error"]["code"] == "libvirt_error");
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk.swap"));
  REQUIRE(rbd_exists("vms", "kiln-base-swap_32"));
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));

  // A secret libvirt does not have: refused before the clone, naming the secret.
  std::string missing = kiln::test::random_uuid();
  auto no_secret = kilnctl(instances, {"--config", write_rbd_config(scratch, missing).string(), "--direct", "boot",
                                       "--image", in_ceph, "--uuid", uuid, "--vcpus", "1", "--memory-mb", "128",
                                       "--root-gb", "1", "--swap-mb", "0"});
  REQUIRE(no_secret.exit_code != 0);
  REQUIRE(no_secret.output["error"]["code"] == "config_invalid");
  REQUIRE(no_secret.output["error"]["message"].get<std::string>().find(missing) != std::string::npos);
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));
}

TEST_CASE("reconcile removes the clones of a boot that died half-way and reports, never removes, RBD images without an instance",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::string image = upload_to_ceph(scratch, "8M");
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();
  // kilnctl killed (failpoint) once the directory is published with its marker: the clones exist, the boot never finished.
  std::vector<std::string> argv = {"env", "KILN_FAILPOINT=boot.directory.published", KILN_KILNCTL, "--json",
                                   "--glance", peers_env().at("GLANCE_URL"), "--libvirt-uri",
                                   peers_env().at("LIBVIRT_URI"), "--virt-type", "qemu", "--instances-path",
                                   instances.string(), "--config", config.string(), "--direct", "boot", "--image",
                                   image, "--uuid", uuid, "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1",
                                   "--swap-mb", "16"};
  auto killed = kiln::run(kiln::Command(argv, {}, std::chrono::seconds(60)));
  INFO(killed.out << killed.err);
  REQUIRE(killed.exit_code != 0);
  REQUIRE(std::filesystem::exists(instances / uuid / ".kiln-provisioning"));
  REQUIRE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE(rbd_exists("vms", uuid + "_disk.swap"));
  // Images of an instance this host does not know (a crash before the publish, or an evacuated guest's disk).
  std::string stranger = kiln::test::random_uuid();
  rbd_admin({"create", "--size", "8M", "vms/" + stranger + "_disk"});

  auto dry = kilnctl(instances, {"--config", config.string(), "instance", "reconcile", "--dry-run"});
  INFO(dry.output.dump());
  REQUIRE(dry.exit_code == 0);
  REQUIRE(rbd_exists("vms", uuid + "_disk"));
  auto report = kilnctl(instances, {"--config", config.string(), "instance", "reconcile"});
  INFO(report.output.dump() << "\n" << report.err);
  REQUIRE(report.exit_code == 0);
  std::map<std::string, json> findings;
  for (const auto& finding : report.output["findings"]) findings[finding["uuid"]] = finding;
  REQUIRE(findings.count(uuid) == 1);
  REQUIRE(findings[uuid]["kind"] == "half_built");
  REQUIRE(findings[uuid]["action"].get<std::string>().find("removed its RBD images") != std::string::npos);
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk.swap"));
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));
  REQUIRE(findings.count(stranger) == 1);
  REQUIRE(findings[stranger]["kind"] == "rbd_images_without_instance");
  REQUIRE(rbd_exists("vms", stranger + "_disk"));  // kept: it may hold a guest's data

  // The retry of the boot that died succeeds; a delete of the stranger removes its image.
  auto retried = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid", uuid,
                                     "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0",
                                     "--no-start"});
  INFO(retried.output.dump());
  REQUIRE(retried.exit_code == 0);
  auto removed = kilnctl(instances, {"--config", config.string(), "--direct", "delete", stranger});
  REQUIRE(removed.exit_code == 0);
  REQUIRE(removed.output["rbd_images"] == json::array({stranger + "_disk"}));
  REQUIRE(kilnctl(instances, {"--config", config.string(), "--direct", "delete", uuid}).exit_code == 0);
}

TEST_CASE("kilnctl cache ls lists the pool bases with their clones, and cache prune removes only old ones without clones",
          "[rbd]") {
  kiln::test::ScratchDir scratch;
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::filesystem::create_directories(instances);
  // Four bases as kiln names them (made with rbd as client.admin, with the metadata kiln sets): an image's, in
  // use by a clone and imported long ago; a swap base imported long ago; one with no import time (old); and one
  // imported just now.
  std::string image = kiln::test::random_uuid();
  std::string tag = std::to_string(std::hash<std::string>{}(image) % 1000000000);
  std::string in_use = "kiln-base-" + kiln::cache::base_name_for(image);
  std::string old = "kiln-base-swap_" + tag;
  std::string unrecorded = "kiln-base-swap_1" + tag;
  std::string young = "kiln-base-swap_2" + tag;
  std::string clone = kiln::test::random_uuid() + "_disk";
  auto now = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count());
  for (const std::string& base : {in_use, old, unrecorded, young}) {
    rbd_admin({"create", "--size", "8M", "vms/" + base});
    rbd_admin({"snap", "create", "vms/" + base + "@snap"});
    rbd_admin({"snap", "protect", "vms/" + base + "@snap"});
  }
  rbd_admin({"image-meta", "set", "vms/" + in_use, "kiln.image_id", image});
  rbd_admin({"image-meta", "set", "vms/" + in_use, "kiln.imported_at", "1000"});
  rbd_admin({"image-meta", "set", "vms/" + old, "kiln.imported_at", "1000"});
  rbd_admin({"image-meta", "set", "vms/" + young, "kiln.imported_at", now});
  rbd_admin({"clone", "vms/" + in_use + "@snap", "vms/" + clone});
  auto ours = [&](const json& items) {
    std::map<std::string, json> found;
    for (const json& item : items) {
      std::string name = item["name"];
      if (name == in_use || name == old || name == unrecorded || name == young) found[name] = item;
    }
    return found;
  };

  auto listed = kilnctl(instances, {"--config", config.string(), "cache", "ls"});
  INFO(listed.output.dump() << "\n" << listed.err);
  REQUIRE(listed.exit_code == 0);
  REQUIRE(listed.output["bases"] == json::array());  // the local cache's shape, as without rbd
  auto bases = ours(listed.output["pool_bases"]);
  REQUIRE(bases.size() == 4);
  REQUIRE(bases[in_use]["pool"] == "vms");
  REQUIRE(bases[in_use]["kind"] == "image");
  REQUIRE(bases[in_use]["image_id"] == image);
  REQUIRE(bases[in_use]["virtual_bytes"] == 8 * 1024 * 1024);
  REQUIRE(bases[in_use]["in_use"] == true);
  REQUIRE(bases[in_use]["clone_count"] == 1);
  REQUIRE(bases[in_use]["clones"] == json::array({"vms/" + clone}));
  REQUIRE(bases[in_use]["imported_at"] == "1970-01-01T00:16:40Z");
  for (const std::string& base : {old, unrecorded, young}) {
    INFO(base);
    REQUIRE(bases[base]["kind"] == "swap");
    REQUIRE_FALSE(bases[base].contains("image_id"));
    REQUIRE(bases[base]["in_use"] == false);
    REQUIRE(bases[base]["clone_count"] == 0);
    REQUIRE(bases[base]["clones"] == json::array());
  }
  REQUIRE(bases[unrecorded]["imported_at"].is_null());
  REQUIRE(bases[young]["imported_at"].is_string());

  // A dry run names the two old bases without clones and removes nothing.
  auto dry = kilnctl(instances, {"--config", config.string(), "--direct", "cache", "prune", "--dry-run"});
  INFO(dry.output.dump() << "\n" << dry.err);
  REQUIRE(dry.exit_code == 0);
  REQUIRE(dry.output["dry_run"] == true);
  auto would = ours(dry.output["pool_decisions"]);
  REQUIRE(would.size() == 2);
  REQUIRE(would[old]["reason"] == "no clones, unused for more than 86400 s");
  REQUIRE(would[old]["removed"] == false);
  REQUIRE(would[unrecorded]["reason"] == "no clones, no import or use time (kiln.imported_at, kiln.last_used)");
  REQUIRE(would[unrecorded]["removed"] == false);
  for (const std::string& base : {in_use, old, unrecorded, young}) REQUIRE(rbd_exists("vms", base));

  // The real prune removes those two; the base with a clone and the young one stay, and are no decision.
  auto pruned = kilnctl(instances, {"--config", config.string(), "--direct", "cache", "prune"});
  INFO(pruned.output.dump() << "\n" << pruned.err);
  REQUIRE(pruned.exit_code == 0);
  auto removed = ours(pruned.output["pool_decisions"]);
  REQUIRE(removed.size() == 2);
  REQUIRE(removed[old]["removed"] == true);
  REQUIRE(removed[unrecorded]["removed"] == true);
  REQUIRE_FALSE(rbd_exists("vms", old));
  REQUIRE_FALSE(rbd_exists("vms", unrecorded));
  REQUIRE(rbd_exists("vms", in_use));
  REQUIRE(rbd_exists("vms", clone));
  REQUIRE(rbd_info("vms/" + in_use + "@snap")["protected"] == "true");
  // The real prune marked the base in use as used (nova's touch of a base its instances use): it will age from now.
  auto relisted = ours(kilnctl(instances, {"--config", config.string(), "cache", "ls"}).output["pool_bases"]);
  REQUIRE(relisted[in_use]["last_used"].is_string());
  REQUIRE(relisted[in_use]["last_used"] != "1970-01-01T00:16:40Z");
  REQUIRE(relisted[young]["last_used"].is_null());
  REQUIRE(rbd_exists("vms", young));

  // Without rbd the answers keep their shape: no pool keys.
  auto local = kilnctl(instances, {"cache", "ls"});
  REQUIRE(local.exit_code == 0);
  REQUIRE_FALSE(local.output.contains("pool_bases"));

  rbd_admin({"rm", "vms/" + clone});
  for (const std::string& base : {in_use, young}) {
    rbd_admin({"snap", "unprotect", "vms/" + base + "@snap"});
    rbd_admin({"snap", "purge", "vms/" + base});
    rbd_admin({"rm", "vms/" + base});
  }
}

TEST_CASE("kilnd's cache manager marks the pool bases in use as used and removes old ones without clones", "[rbd]") {
  kiln::test::ScratchDir scratch;
  // Two bases imported long ago (as an older kiln recorded it): one without clones, one with a clone.
  std::string old = "kiln-base-test-old-" + kiln::test::random_uuid();
  std::string in_use = "kiln-base-test-in-use-" + kiln::test::random_uuid();
  for (const std::string& base : {old, in_use}) {
    rbd_admin({"create", "--size", "4M", "vms/" + base});
    rbd_admin({"image-meta", "set", "vms/" + base, "kiln.imported_at", "1000"});
    rbd_admin({"snap", "create", "vms/" + base + "@snap"});
    rbd_admin({"snap", "protect", "vms/" + base + "@snap"});
  }
  std::string clone = kiln::test::random_uuid() + "_disk";
  rbd_admin({"clone", "vms/" + in_use + "@snap", "vms/" + clone});

  std::filesystem::path socket = scratch / "kiln.sock";
  std::filesystem::path config = scratch / "kilnd.conf";
  kiln::test::write_text(
      config, "[DEFAULT]\ninstances_path = " + (scratch / "instances").string() + "\n[glance]\napi_servers = " +
                  peers_env().at("GLANCE_URL") + "\n[libvirt]\nconnection_uri = " + peers_env().at("LIBVIRT_URI") +
                  "\nvirt_type = qemu\nimages_type = rbd\nimages_rbd_pool = vms\nimages_rbd_ceph_conf = " +
                  ceph().conf + "\nrbd_user = kiln\nrbd_secret_uuid = " + ceph_secret() +
                  "\n[rpc]\nunix_socket = " + socket.string() +
                  "\n[image_cache]\nmanager_interval_seconds = 1\nremove_unused_original_minimum_age_seconds = 3600\n");
  kiln::test::KilndProcess kilnd(config, socket);
  REQUIRE(kilnd.wait_ready());
  auto last_used = [&] {
    auto result = kiln::run(kiln::Command({"rbd", "--conf", ceph().conf, "image-meta", "get", "vms/" + in_use,
                                           "kiln.last_used"}));
    return result.exit_code == 0 ? result.out : std::string();
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((rbd_exists("vms", old) || last_used().empty()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  INFO(kilnd.log());
  REQUIRE_FALSE(rbd_exists("vms", old));
  REQUIRE(kilnd.log().find("cache manager: removed pool base vms/" + old) != std::string::npos);
  REQUIRE(rbd_exists("vms", in_use));
  REQUIRE(rbd_info("vms/" + in_use + "@snap")["protected"] == "true");
  auto marked = std::stoll(last_used());
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  REQUIRE(marked > now.count() - 60);
  REQUIRE(marked <= now.count());
  REQUIRE(kilnd.stop(SIGTERM) == 0);

  rbd_admin({"rm", "vms/" + clone});
  rbd_admin({"snap", "unprotect", "vms/" + in_use + "@snap"});
  rbd_admin({"snap", "purge", "vms/" + in_use});
  rbd_admin({"rm", "vms/" + in_use});
}
