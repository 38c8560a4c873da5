// Hostile images pushed through the full boot path from the real Glance:
// each must be refused, with its stable code, before qemu-img opens it, and
// leave nothing in _base. And signatures, enforced through kilnctl.
#include <catch2/catch.hpp>

#include "kiln/cache/image_cache.h"
#include "kiln/util/fs.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Hostile {
  std::string what;
  std::string disk_format;
  std::string expected_code;
  std::function<void(const fs::path&)> make;
};

void qemu_img(std::vector<std::string> args) {
  args.insert(args.begin(), "qemu-img");
  kiln::run_checked({args});
}

// Overwrites bytes at `offset` with `octal` (printf escapes), size unchanged.
void patch_bytes(const fs::path& file, std::uint64_t offset, const std::string& octal) {
  kiln::run_checked({{"sh", "-c", "printf '" + octal + "' | dd of=" + file.string() + " bs=1 seek=" +
                                      std::to_string(offset) + " conv=notrunc status=none"}});
}

std::vector<Hostile> hostile_images(const fs::path& scratch) {
  return {
      {"qcow2 whose backing file is /etc/passwd", "qcow2", "image_unsafe",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", file.string(), "1M"});
       }},
      {"qcow2 with an external data file", "qcow2", "image_unsafe",
       [scratch](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", "-o", "data_file=" + (scratch / "data.raw").string(),
                   file.string(), "1M"});
       }},
      {"vmdk descriptor whose flat extent is /etc/hostname", "vmdk", "image_unsafe",
       [](const fs::path& file) {
         kiln::test::write_text(file,
                                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                                "createType=\"monolithicFlat\"\n\n# Extent description\n"
                                "RW 2048 FLAT \"/etc/hostname\" 0\n\n# The Disk Data Base\n"
                                "ddb.virtualHWVersion = \"4\"\n");
       }},
      {"qcow2 disguised as raw", "raw", "image_format_mismatch",
       [](const fs::path& file) { qemu_img({"create", "-q", "-f", "qcow2", file.string(), "1M"}); }},
      {"qcow2 with an absurd l1_size", "qcow2", "image_malformed",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", file.string(), "1M"});
         patch_bytes(file, 36, "\\377\\377\\377\\377");
       }},
      {"qcow2 with cluster_bits 64", "qcow2", "image_malformed",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", file.string(), "1M"});
         patch_bytes(file, 20, "\\000\\000\\000\\100");
       }},
      {"qcow2 truncated inside its header", "qcow2", "image_malformed",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", (file.string() + ".whole"), "1M"});
         kiln::run_checked({{"sh", "-c", "head -c 60 " + file.string() + ".whole > " + file.string()}});
       }},
      {"vhd whose footer lies about its size", "vhd", "image_malformed",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "vpc", "-o", "subformat=fixed", file.string(), "1M"});
         // current_size sits at offset 48 of the 512-byte footer at the end.
         auto size = kiln::file_size(file);
         patch_bytes(file, size - 512 + 48, "\\000\\000\\000\\100");
       }},
      {"qcow2 with a backing file disguised as raw", "raw", "image_format_mismatch",
       [](const fs::path& file) {
         qemu_img({"create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", file.string(), "1M"});
       }},
  };
}

}  // namespace

TEST_CASE("every hostile image is refused on the boot path and leaves nothing in _base") {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  for (const Hostile& hostile : hostile_images(scratch.path())) {
    INFO(hostile.what);
    fs::path file = scratch / "hostile.img";
    fs::remove(file);
    hostile.make(file);
    std::string image_id = kiln::test::upload_image(hostile.what, hostile.disk_format, file);
    REQUIRE(kiln::test::image_record(image_id)["status"] == "active");  // Glance took it as is
    std::string uuid = kiln::test::random_uuid();
    auto result = kiln::test::kilnctl(instances, {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                                  "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0"});
    INFO(result.err);
    REQUIRE(result.exit_code == 1);
    REQUIRE(result.output["error"]["code"] == hostile.expected_code);
    REQUIRE(kiln::test::tree_listing(instances / "_base").empty());
    REQUIRE_FALSE(fs::exists(instances / uuid));
  }
}

TEST_CASE("with signatures verified, a signed image boots and a mis-signed or unsigned one is refused") {
  kiln::test::ScratchDir scratch;
  fs::path certificates = scratch / "certificates";
  fs::create_directories(certificates);
  std::string certificate_uuid = kiln::test::random_uuid();
  std::string dir = scratch.path().string();
  kiln::run_checked({{"sh", "-c",
                      "cd " + dir +
                          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout signer.key -out certificates/" +
                          certificate_uuid + ".pem -days 2 -subj '/CN=image signer' 2>/dev/null"}});
  kiln::test::make_qcow2(scratch / "image.qcow2", "64M");
  kiln::test::write_text(scratch / "other", "not the image");
  auto sign = [&](const std::string& file) {
    return kiln::run_checked({{"sh", "-c",
                               "cd " + dir + " && openssl dgst -sha256 -sigopt rsa_padding_mode:pss"
                                             " -sigopt rsa_pss_saltlen:max -sign signer.key " + file +
                                             " | base64 -w 0"}});
  };
  auto upload_signed = [&](const std::string& name, const std::string& signature) {
    std::string id = kiln::test::upload_image(name, "qcow2", scratch / "image.qcow2");
    json patch = json::array();
    for (auto [key, value] : std::map<std::string, std::string>{{"img_signature", signature},
                                                                {"img_signature_hash_method", "SHA-256"},
                                                                {"img_signature_key_type", "RSA-PSS"},
                                                                {"img_signature_certificate_uuid", certificate_uuid}}) {
      patch.push_back({{"op", "add"}, {"path", "/" + key}, {"value", value}});
    }
    kiln::run_checked({{"curl", "-sS", "--fail-with-body", "-X", "PATCH",
                        kiln::test::peers().glance_url + "/v2/images/" + id, "-H",
                        "Content-Type: application/openstack-images-v2.1-json-patch", "--data-binary", patch.dump()}});
    return id;
  };
  std::string good = upload_signed("signed", sign("image.qcow2"));
  std::string bad = upload_signed("mis-signed", sign("other"));
  std::string unsigned_id = kiln::test::upload_image("unsigned", "qcow2", scratch / "image.qcow2");
  // nova's key: verify_glance_signatures = true refuses unsigned images too.
  std::string key = GENERATE(as<std::string>{}, "verify_glance_signatures", "require_image_signatures");
  INFO("[glance] " << key << " = true");
  kiln::test::write_text(scratch / "kiln.conf", "[glance]\n" + key + " = true\n"
                                                "signature_certificate_directory = " + certificates.string() + "\n");
  fs::path instances = scratch / "instances";
  auto fetch = [&](const std::string& id) {
    return kiln::run({{KILN_KILNCTL, "--json", "--config", (scratch / "kiln.conf").string(), "--glance",
                       kiln::test::peers().glance_url, "--instances-path", instances.string(), "cache", "fetch", id}});
  };

  auto signed_result = fetch(good);
  INFO(signed_result.err);
  REQUIRE(signed_result.exit_code == 0);
  for (const std::string& id : {bad, unsigned_id}) {
    auto refused = fetch(id);
    REQUIRE(refused.exit_code == 1);
    REQUIRE(json::parse(refused.out)["error"]["code"] == "signature_invalid");
    REQUIRE_FALSE(fs::exists(instances / "_base" / kiln::cache::base_name_for(id)));
  }
}
