// images_type = rbd end to end: Glance with an RBD store (tools/peers/start --ceph, fixture peers-rbd) in front
// of the single-node Ceph (fixture ceph), kilnctl --direct booting on the private libvirtd with QEMU's TCG.
// The guest's root disk is a clone of Glance's snapshot: nothing is downloaded, the instance directory holds no
// disk, and a delete removes the clone. Budget: about 15 s for the file (the boot's QEMU start is most of it).
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "assertions.h"
#include "ceph_support.h"
#include "kiln/cache/image_cache.h"
#include "kiln/util/subprocess.h"
#include "peers.h"
#include "scratch.h"

namespace {

using kiln::test::kilnctl;
using kiln::test::virsh;
using nlohmann::json;

using kiln::test::ceph;
using kiln::test::rbd_admin;
using kiln::test::rbd_exists;

const std::map<std::string, std::string>& peers_env() {
  static const auto env = [] {
    auto values = kiln::test::read_env_file(KILN_PEERS_ENV);
    if (!values) FAIL("no " KILN_PEERS_ENV ": run through ctest, which starts the ceph and peers-rbd fixtures");
    return *values;
  }();
  return env;
}

std::string run_ok(std::vector<std::string> argv) {
  auto result = kiln::run(kiln::Command(argv, {}, std::chrono::seconds(60)));
  INFO(kiln::describe(argv) << "\n" << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  return result.out;
}

// The libvirt ceph secret nova expects the operator to define: client.kiln's key, under a uuid kiln is told.
// Defined once per test process (the private libvirtd keeps it until the fixture stops).
const std::string& ceph_secret() {
  static const std::string uuid = [] {
    std::string id = kiln::test::random_uuid();
    kiln::test::ScratchDir scratch;
    kiln::test::write_text(scratch / "secret.xml", "<secret ephemeral='no' private='no'><uuid>" + id +
                                                        "</uuid><usage type='ceph'><name>client.kiln " + id +
                                                        "</name></usage></secret>");
    auto defined = virsh({"secret-define", (scratch / "secret.xml").string()});
    INFO(defined.out << defined.err);
    REQUIRE(defined.exit_code == 0);
    std::string key = run_ok({"ceph", "--conf", ceph().conf, "auth", "get-key", "client.kiln"});
    auto set = virsh({"secret-set-value", "--secret", id, "--base64", key});
    INFO(set.out << set.err);
    REQUIRE(set.exit_code == 0);
    return id;
  }();
  return uuid;
}

// kiln's configuration for images_type = rbd, as an operator would write it (nova's keys).
std::filesystem::path write_rbd_config(const kiln::test::ScratchDir& scratch, const std::string& secret) {
  std::filesystem::path config = scratch / "kiln.conf";
  kiln::test::write_text(config, "[libvirt]\nimages_type = rbd\nimages_rbd_pool = vms\nimages_rbd_ceph_conf = " +
                                     ceph().conf + "\nrbd_user = kiln\nrbd_secret_uuid = " + secret +
                                     "\nrbd_connect_timeout = 5\n");
  return config;
}

// A raw image in Glance's ceph store: Glance writes images/<id>, snapshots it as "snap" and protects it.
std::string upload_to_ceph(const kiln::test::ScratchDir& scratch, const std::string& size) {
  std::filesystem::path file = scratch / "image.raw";
  run_ok({"qemu-img", "create", "-q", "-f", "raw", file.string(), size});
  run_ok({"qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", file.string()});
  std::string glance = peers_env().at("GLANCE_URL");
  json created = json::parse(run_ok({"curl", "-sS", "--fail-with-body", "-X", "POST", glance + "/v2/images", "-H",
                                     "Content-Type: application/json", "-d",
                                     json{{"name", "rbd-boot"}, {"disk_format", "raw"}, {"container_format", "bare"}}
                                         .dump()}));
  std::string id = created["id"];
  run_ok({"curl", "-sS", "--fail-with-body", "-X", "PUT", glance + "/v2/images/" + id + "/file", "-H",
          "Content-Type: application/octet-stream", "-H", "X-Image-Meta-Store: ceph", "--data-binary",
          "@" + file.string()});
  return id;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string glance_log() {
  std::ifstream in(peers_env().at("ROOT") + "/glance/glance-api.log");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

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

TEST_CASE("images_type = rbd refuses an image Glance keeps elsewhere, swap and a missing secret before anything is created, and a failed boot removes its clone", "[rbd]") {
  kiln::test::ScratchDir scratch;
  // A raw image in Glance's file store: no rbd:// location.
  std::filesystem::path file = scratch / "plain.raw";
  run_ok({"qemu-img", "create", "-q", "-f", "raw", file.string(), "8M"});
  std::string glance = peers_env().at("GLANCE_URL");
  json created = json::parse(run_ok({"curl", "-sS", "--fail-with-body", "-X", "POST", glance + "/v2/images", "-H",
                                     "Content-Type: application/json", "-d",
                                     json{{"name", "file-store"}, {"disk_format", "raw"}, {"container_format", "bare"}}
                                         .dump()}));
  std::string image = created["id"];
  run_ok({"curl", "-sS", "--fail-with-body", "-X", "PUT", glance + "/v2/images/" + image + "/file", "-H",
          "Content-Type: application/octet-stream", "--data-binary", "@" + file.string()});
  std::filesystem::path config = write_rbd_config(scratch, ceph_secret());
  std::filesystem::path instances = scratch / "instances";
  std::string uuid = kiln::test::random_uuid();

  auto refused = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", image, "--uuid", uuid,
                                     "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
  INFO(refused.output.dump() << "\n" << refused.err);
  REQUIRE(refused.exit_code != 0);
  REQUIRE(refused.output["error"]["code"] == "rbd_image_not_in_cluster");
  REQUIRE(glance_log().find("GET /v2/images/" + image + "/file") == std::string::npos);
  REQUIRE_FALSE(std::filesystem::exists(instances / uuid));
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
  REQUIRE(virsh({"dominfo", uuid}).exit_code != 0);

  // Swap in RBD is the next slice: refused up front too, for an image that is in the cluster.
  std::string in_ceph = upload_to_ceph(scratch, "8M");
  auto swap = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", in_ceph, "--uuid", uuid,
                                  "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "64"});
  REQUIRE(swap.exit_code != 0);
  REQUIRE(swap.output["error"]["code"] == "invalid_argument");
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));

  // A boot that fails after its clone (libvirt refuses the definition: 512 vCPUs on a pc machine) removes
  // the clone and the directory again.
  auto undone = kilnctl(instances, {"--config", config.string(), "--direct", "boot", "--image", in_ceph, "--uuid",
                                    uuid, "--vcpus", "512", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
  INFO(undone.output.dump());
  REQUIRE(undone.exit_code != 0);
  REQUIRE(undone.output["error"]["code"] == "libvirt_error");
  REQUIRE_FALSE(rbd_exists("vms", uuid + "_disk"));
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
