// One real boot end to end, read like an operator's session: upload an image
// to the real Glance, boot it with kilnctl against a real libvirtd, and judge
// the result with independent tools (qemu-img, virsh, virt-xml-validate,
// blkid). Then the ways a boot must fail: clearly, and changing nothing.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <sstream>

#include "kiln/cache/image_cache.h"
#include "kiln/util/fs.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;
using kiln::test::kilnctl;
using kiln::test::virsh;

namespace {

// A host's instances path in a scratch directory; deletes what it booted.
struct Host {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  std::vector<std::string> booted;

  ~Host() {
    for (const auto& uuid : booted) kilnctl(instances, {"delete", uuid});
  }

  kiln::test::KilnctlResult boot(const std::string& image_id, const std::string& uuid,
                                 std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                     "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "16"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto result = kilnctl(instances, args);
    if (result.exit_code == 0) booted.push_back(uuid);
    return result;
  }

  fs::path base_of(const std::string& image_id) const {
    return instances / "_base" / kiln::cache::base_name_for(image_id);
  }
};

json qemu_img_info(const fs::path& path) {
  return json::parse(kiln::run_checked(
      {{"qemu-img", "info", "-U", "--output=json", "-f", "qcow2", path.string()}}));
}

std::string domain_state(const std::string& name) {
  auto result = virsh({"domstate", name});
  return result.exit_code == 0 ? result.out.substr(0, result.out.find('\n')) : "absent";
}

ino_t inode_of(const fs::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_ino;
}

// A tree listing without the empty _base/ and locks/ directories and the lock
// files, which kiln keeps by design (deleting a lock file breaks exclusion).
std::string without_cache_skeleton(const std::string& listing) {
  std::string kept;
  std::istringstream lines(listing);
  for (std::string line; std::getline(lines, line);) {
    if (line != "_base/" && line.rfind("locks", 0) != 0) kept += line + "\n";
  }
  return kept;
}

// Runs a boot that must fail with `code` and change nothing under instances_path.
void require_refused(Host& host, const std::string& image_id, const std::string& uuid,
                     const std::string& code, std::vector<std::string> extra = {}, int exit_code = 1) {
  std::string before = kiln::test::tree_listing(host.instances);
  auto result = host.boot(image_id, uuid, extra);
  INFO(result.err);
  REQUIRE(result.exit_code == exit_code);
  REQUIRE(result.output["error"]["code"] == code);
  REQUIRE(result.err.find("error [" + code + "]") != std::string::npos);
  std::string after = kiln::test::tree_listing(host.instances);
  REQUIRE(without_cache_skeleton(after) == without_cache_skeleton(before));
  REQUIRE(domain_state("instance-" + uuid) == "absent");
}

}  // namespace

TEST_CASE("booting a qcow2 image from Glance builds the instance directory and a running domain") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("cirros-like", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = kiln::test::random_uuid();

  auto result = host.boot(image_id, uuid);
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  fs::path dir = host.instances / uuid;
  fs::path base = host.base_of(image_id);
  REQUIRE(result.output["instance_dir"] == dir.string());
  REQUIRE(result.output["domain"]["state"] == "running");
  REQUIRE(domain_state("instance-" + uuid) == "running");
  REQUIRE(result.output["base"]["downloaded_bytes"] == kiln::file_size(host.scratch / "image.qcow2"));

  // The base is raw and holds exactly the image's content.
  auto compare = kiln::run({{"qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw",
                             (host.scratch / "image.qcow2").string(), base.string()}});
  INFO(compare.out << compare.err);
  REQUIRE(compare.exit_code == 0);
  REQUIRE(kiln::file_size(base) == 64ULL << 20);
  REQUIRE(kiln::test::tree_listing(host.instances / "_base").find(".part") == std::string::npos);

  // The overlay: qcow2 on the absolute base path, raw pinned, flavor-sized, clean.
  auto disk = qemu_img_info(dir / "disk");
  REQUIRE(disk["backing-filename"] == base.string());
  REQUIRE(disk["backing-filename-format"] == "raw");
  REQUIRE(disk["virtual-size"] == 1ULL << 30);
  REQUIRE(kiln::run({{"qemu-img", "check", "-U", "-q", "-f", "qcow2", (dir / "disk").string()}}).exit_code == 0);

  // Swap: an overlay on the shared swap base, which has a swap signature.
  fs::path swap_base = host.instances / "_base" / "swap_16";
  auto swap = qemu_img_info(dir / "disk.swap");
  REQUIRE(swap["backing-filename"] == swap_base.string());
  REQUIRE(swap["virtual-size"] == 16ULL << 20);
  REQUIRE(kiln::run_checked({{"blkid", "-p", "-o", "value", "-s", "TYPE", swap_base.string()}}) == "swap\n");

  REQUIRE(json::parse(kiln::read_file(dir / "disk.info")) ==
          json{{(dir / "disk").string(), "qcow2"}, {(dir / "disk.swap").string(), "qcow2"}});
  REQUIRE(fs::exists(dir / "console.log"));
  REQUIRE_FALSE(fs::exists(dir / ".kiln-provisioning"));
  auto validate = kiln::run({{"virt-xml-validate", (dir / "libvirt.xml").string(), "domain"}});
  INFO(validate.out << validate.err);
  REQUIRE(validate.exit_code == 0);
  auto defined = virsh({"dumpxml", "--inactive", "instance-" + uuid});
  REQUIRE(defined.out.find("<uuid>" + uuid + "</uuid>") != std::string::npos);
  REQUIRE(defined.out.find(dir / "console.log") != std::string::npos);

  // Delete: the domain and directory go, the base stays for the cache.
  auto deleted = kilnctl(host.instances, {"delete", uuid});
  REQUIRE(deleted.exit_code == 0);
  REQUIRE(deleted.output["domain_found"] == true);
  REQUIRE(domain_state("instance-" + uuid) == "absent");
  REQUIRE_FALSE(fs::exists(dir));
  REQUIRE(fs::exists(base));
  auto again = kilnctl(host.instances, {"delete", uuid});
  REQUIRE(again.exit_code == 0);
  REQUIRE(again.output["domain_found"] == false);
}

TEST_CASE("a second boot of the same image downloads nothing") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("shared", "qcow2", host.scratch / "image.qcow2");

  auto first = host.boot(image_id, kiln::test::random_uuid(), {"--no-start"});
  REQUIRE(first.exit_code == 0);
  REQUIRE(first.output["base"]["downloaded_bytes"] > 0);
  fs::path base = host.base_of(image_id);
  ino_t inode = inode_of(base);

  auto second = host.boot(image_id, kiln::test::random_uuid(), {"--no-start"});
  INFO(second.err);
  REQUIRE(second.exit_code == 0);
  REQUIRE(second.output["base"]["downloaded_bytes"] == 0);
  REQUIRE(inode_of(base) == inode);
  REQUIRE(second.output["disk"]["backing_file"] == base.string());
}

TEST_CASE("a raw image becomes the base as downloaded, and --no-start leaves the domain shut off") {
  Host host;
  kiln::run_checked({{"sh", "-c", "head -c 3145728 /dev/urandom > " + (host.scratch / "image.raw").string()}});
  std::string image_id = kiln::test::upload_image("raw", "raw", host.scratch / "image.raw");
  std::string uuid = kiln::test::random_uuid();

  auto result = host.boot(image_id, uuid, {"--no-start"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  REQUIRE(kiln::read_file(host.base_of(image_id)) == kiln::read_file(host.scratch / "image.raw"));
  REQUIRE(result.output["domain"]["state"] == "shut off");
  REQUIRE(domain_state("instance-" + uuid) == "shut off");
}

TEST_CASE("bad boot requests fail with a stable code and change nothing") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "small.qcow2", "64M");
  kiln::test::make_qcow2(host.scratch / "big.qcow2", "2G");
  std::string big_image = kiln::test::upload_image("2 GiB disk", "qcow2", host.scratch / "big.qcow2");

  SECTION("unknown image id") {
    require_refused(host, kiln::test::random_uuid(), kiln::test::random_uuid(), "image_not_found");
  }
  SECTION("image not active") {
    std::string queued = kiln::test::upload_image("never uploaded", "qcow2", "");
    require_refused(host, queued, kiln::test::random_uuid(), "image_not_active");
  }
  SECTION("image data that does not match Glance's checksums") {
    std::string image_id = kiln::test::upload_image("rotted", "qcow2", host.scratch / "small.qcow2");
    // Bit rot in Glance's store: same size, one byte changed.
    kiln::run_checked({{"sh", "-c", "printf '\\377' | dd of=" +
                                        (kiln::test::peers().glance_datadir / image_id).string() +
                                        " bs=1 seek=1048576 conv=notrunc status=none"}});
    require_refused(host, image_id, kiln::test::random_uuid(), "checksum_mismatch");
  }
  SECTION("an instance id that is not a UUID cannot name a path") {
    // Refused by the boot request's schema, in kilnctl as in kilnd (exit 2, before anything starts).
    require_refused(host, big_image, "../../etc", "invalid_argument", {}, 2);
  }
  SECTION("a root disk smaller than the image") {
    require_refused(host, big_image, kiln::test::random_uuid(), "flavor_disk_too_small");
  }
  SECTION("a disk format kiln cannot convert") {
    std::string ploop = kiln::test::upload_image("ploop", "ploop", host.scratch / "small.qcow2");
    require_refused(host, ploop, kiln::test::random_uuid(), "image_format_refused");
  }
}

TEST_CASE("an instance uuid already in use is refused and the instance is untouched") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("taken", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = kiln::test::random_uuid();
  REQUIRE(host.boot(image_id, uuid, {"--no-start"}).exit_code == 0);
  std::string before = kiln::test::tree_listing(host.instances);

  auto again = kilnctl(host.instances, {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                        "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
  REQUIRE(again.exit_code == 1);
  REQUIRE(again.output["error"]["code"] == "instance_exists");
  REQUIRE(kiln::test::tree_listing(host.instances) == before);
  REQUIRE(domain_state("instance-" + uuid) == "shut off");
}

TEST_CASE("an unreachable Glance is an http_error and nothing is written") {
  kiln::test::ScratchDir scratch;
  auto result = kiln::run({{KILN_KILNCTL, "--json", "--glance", "http://127.0.0.1:1", "--libvirt-uri",
                            kiln::test::peers().libvirt_uri, "--instances-path",
                            (scratch / "instances").string(), "boot", "--image",
                            kiln::test::random_uuid(), "--uuid", kiln::test::random_uuid(), "--vcpus",
                            "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"}});
  REQUIRE(result.exit_code == 1);
  REQUIRE(json::parse(result.out)["error"]["code"] == "http_error");
  REQUIRE_FALSE(fs::exists(scratch / "instances"));
}

TEST_CASE("a flavor with an ephemeral disk and a NIC boots with disk.local and the NIC's tap") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("with extras", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = kiln::test::random_uuid();
  auto result = host.boot(image_id, uuid, {"--ephemeral-gb", "1", "--nic", "type=ethernet,mac=52:54:00:6b:69:01"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  REQUIRE(result.output["domain"]["state"] == "running");
  fs::path dir = host.instances / uuid;
  // The image has no os_type and no default_ephemeral_format is set: nova's
  // default, vfat (nova/privsep/fs.py _DEFAULT_FILE_SYSTEM).
  fs::path ephemeral_base = host.instances / "_base" / "ephemeral_1_0706d66";
  REQUIRE(qemu_img_info(dir / "disk.local")["backing-filename"] == ephemeral_base.string());
  REQUIRE(kiln::run_checked({{"blkid", "-p", "-o", "value", "-s", "TYPE", ephemeral_base.string()}}) == "vfat\n");
  REQUIRE(json::parse(kiln::read_file(dir / "disk.info")).contains((dir / "disk.local").string()));
  auto interfaces = virsh({"domiflist", "instance-" + uuid});
  REQUIRE(interfaces.out.find("52:54:00:6b:69:01") != std::string::npos);
}

TEST_CASE("a bad NIC is refused before anything is fetched") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("bad nic", "qcow2", host.scratch / "image.qcow2");
  require_refused(host, image_id, kiln::test::random_uuid(), "invalid_argument",
                  {"--nic", "type=ethernet,mac=01:00:5e:00:00:01"}, 2);
  REQUIRE_FALSE(fs::exists(host.base_of(image_id)));
}
