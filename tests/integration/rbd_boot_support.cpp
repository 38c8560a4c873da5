#include "rbd_boot_support.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>

#include "ceph_support.h"
#include "kiln/util/subprocess.h"
#include "peers.h"
#include "scratch.h"

namespace kiln::test {

using nlohmann::json;

const std::map<std::string, std::string>& peers_env() {
  static const auto env = [] {
    auto values = read_env_file(KILN_PEERS_ENV);
    if (!values) FAIL("no " KILN_PEERS_ENV ": run through ctest, which starts the ceph and peers-rbd fixtures");
    return *values;
  }();
  return env;
}

std::string run_ok(std::vector<std::string> argv) {
  auto result = run(Command(argv, {}, std::chrono::seconds(60)));
  INFO(describe(argv) << "\n" << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  return result.out;
}

// The libvirt ceph secret nova expects the operator to define: client.kiln's key, under a uuid kiln is told.
// Defined once per test process (the private libvirtd keeps it until the fixture stops).
const std::string& ceph_secret() {
  static const std::string uuid = [] {
    std::string id = random_uuid();
    ScratchDir scratch;
    write_text(scratch / "secret.xml", "<secret ephemeral='no' private='no'><uuid>" + id +
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
std::filesystem::path write_rbd_config(const ScratchDir& scratch, const std::string& secret) {
  std::filesystem::path config = scratch / "kiln.conf";
  write_text(config, "[libvirt]\nimages_type = rbd\nimages_rbd_pool = vms\nimages_rbd_ceph_conf = " + ceph().conf +
                         "\nrbd_user = kiln\nrbd_secret_uuid = " + secret + "\nrbd_connect_timeout = 5\n");
  return config;
}

// A raw image in Glance's ceph store: Glance writes images/<id>, snapshots it as "snap" and protects it.
std::string upload_to_ceph(const ScratchDir& scratch, const std::string& size) {
  std::filesystem::path file = scratch / "image.raw";
  run_ok({"qemu-img", "create", "-q", "-f", "raw", file.string(), size});
  run_ok({"qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", file.string()});
  std::string glance = peers_env().at("GLANCE_URL");
  json created = json::parse(run_ok(
      {"curl", "-sS", "--fail-with-body", "-X", "POST", glance + "/v2/images", "-H", "Content-Type: application/json",
       "-d", json{{"name", "rbd-boot"}, {"disk_format", "raw"}, {"container_format", "bare"}}.dump()}));
  std::string id = created["id"];
  run_ok({"curl", "-sS", "--fail-with-body", "-X", "PUT", glance + "/v2/images/" + id + "/file", "-H",
          "Content-Type: application/octet-stream", "-H", "X-Image-Meta-Store: ceph", "--data-binary",
          "@" + file.string()});
  return id;
}

// An image in Glance's file store (no rbd:// location).
std::string upload_to_file_store(const std::filesystem::path& file, const std::string& disk_format) {
  std::string glance = peers_env().at("GLANCE_URL");
  json created = json::parse(run_ok(
      {"curl", "-sS", "--fail-with-body", "-X", "POST", glance + "/v2/images", "-H", "Content-Type: application/json",
       "-d", json{{"name", "file-store"}, {"disk_format", disk_format}, {"container_format", "bare"}}.dump()}));
  std::string id = created["id"];
  run_ok({"curl", "-sS", "--fail-with-body", "-X", "PUT", glance + "/v2/images/" + id + "/file", "-H",
          "Content-Type: application/octet-stream", "--data-binary", "@" + file.string()});
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

}  // namespace kiln::test
