// Signed images on the real Glance: a publisher signs the image file with
// openssl, Glance stores the bytes and the four img_signature* properties,
// and kiln checks the signature while the download streams, as Nova does.
#include <catch2/catch.hpp>
#include <random>

#include "assertions.h"
#include "kiln/glance/client.h"
#include "kiln/http/url.h"
#include "kiln/image/signature.h"
#include "kiln/util/subprocess.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::ErrorCode;
using nlohmann::json;

namespace {

// An image publisher: an RSA key, and its self-signed certificate installed
// in the scratch directory's certificates/ as an operator would install it.
class Publisher {
 public:
  explicit Publisher(const kiln::test::ScratchDir& scratch)
      : key_(scratch / "publisher.key"), certificates_(scratch / "certificates"),
        certificate_uuid_(kiln::test::random_uuid()) {
    fs::create_directories(certificates_);
    kiln::run_checked({{"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                        key_.string()}});
    kiln::run_checked({{"openssl", "req", "-x509", "-new", "-key", key_.string(), "-subj",
                        "/CN=kiln test image publisher", "-days", "2", "-out",
                        (certificates_ / (certificate_uuid_ + ".pem")).string()}});
  }

  // The four properties of `file` signed as Glance's signature guide signs.
  json signature_properties(const fs::path& file) const {
    fs::path signature = file.string() + ".signature";
    kiln::run_checked({{"openssl", "dgst", "-sha256", "-sign", key_.string(), "-sigopt", "rsa_padding_mode:pss",
                        "-sigopt", "rsa_pss_saltlen:max", "-out", signature.string(), file.string()}});
    std::string encoded = kiln::run_checked({{"base64", "-w", "0", signature.string()}});
    return {{"img_signature", encoded},
            {"img_signature_hash_method", "SHA-256"},
            {"img_signature_key_type", "RSA-PSS"},
            {"img_signature_certificate_uuid", certificate_uuid_}};
  }

  kiln::image::SignaturePolicy policy() const { return {certificates_, "", true}; }

 private:
  fs::path key_;
  fs::path certificates_;
  std::string certificate_uuid_;
};

// 3 MiB and a few odd bytes of noise: several chunks of a streamed download.
fs::path make_image(const fs::path& path, unsigned seed) {
  std::mt19937 noise(seed);
  std::string bytes(3 * 1024 * 1024 + 5, '\0');
  for (char& byte : bytes) byte = static_cast<char>(noise());
  kiln::test::write_text(path, bytes);
  return path;
}

// Glance without a key manager refuses img_signature* at upload (it would
// fetch the certificate from Barbican), so they are added after the data.
void add_signature(const std::string& image_id, const json& properties) {
  auto result = kiln::test::patch_image(image_id, properties);
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
}

kiln::glance::GlanceClient glance() {
  return kiln::glance::GlanceClient({kiln::http::parse_url(kiln::test::peers().glance_url)});
}

// Streams the image from Glance through a verifier built from its record.
// Returns how many chunks arrived.
int download_and_verify(const std::string& image_id, const kiln::image::SignaturePolicy& policy) {
  auto client = glance();
  kiln::glance::ImageRecord record = client.get_image(image_id);
  REQUIRE(record.status == "active");
  auto verifier = kiln::image::make_signature_verifier(record.properties, policy, image_id);
  REQUIRE(verifier.has_value());
  int chunks = 0;
  auto downloaded = client.download(image_id, 0, [&](std::span<const char> data) {
    verifier->update(data);
    ++chunks;
  });
  REQUIRE(downloaded.bytes == record.size.value());
  verifier->verify();
  return chunks;
}

}  // namespace

TEST_CASE("an image signed by its publisher verifies while it streams from Glance") {
  kiln::test::ScratchDir scratch;
  Publisher publisher(scratch);
  fs::path image = make_image(scratch / "image.raw", 1);
  std::string image_id = kiln::test::upload_image("signed image", "raw", image);
  json signature = publisher.signature_properties(image);
  add_signature(image_id, signature);

  auto record = glance().get_image(image_id);
  for (const auto& [name, value] : signature.items()) {
    INFO(name);
    REQUIRE(record.properties.at(name) == value.get<std::string>());
  }
  REQUIRE(download_and_verify(image_id, publisher.policy()) > 1);
}

TEST_CASE("an image whose signature is over other bytes fails verification at the end of the download") {
  kiln::test::ScratchDir scratch;
  Publisher publisher(scratch);
  std::string image_id = kiln::test::upload_image("tampered image", "raw", make_image(scratch / "stored.raw", 2));
  add_signature(image_id, publisher.signature_properties(make_image(scratch / "signed.raw", 3)));
  REQUIRE_KILN_ERROR_MENTIONS(download_and_verify(image_id, publisher.policy()), ErrorCode::kSignatureInvalid,
                              "image " + image_id + " does not match its signature: the 3145733 bytes downloaded");
}

TEST_CASE("Glance without a key manager refuses signed uploads so signatures are added after the data") {
  // The fixture above depends on this behaviour of the peer (notes A.5).
  kiln::test::ScratchDir scratch;
  Publisher publisher(scratch);
  fs::path image = make_image(scratch / "image.raw", 4);
  std::string image_id = kiln::test::upload_image("signed before upload", "raw", {});
  add_signature(image_id, publisher.signature_properties(image));
  auto upload = kiln::run({{"curl", "-sS", "-o", (scratch / "reply").string(), "-w", "%{http_code}", "-X", "PUT",
                            kiln::test::peers().glance_url + "/v2/images/" + image_id + "/file", "-H",
                            "Content-Type: application/octet-stream", "--data-binary", "@" + image.string()}});
  INFO(upload.out << upload.err);
  REQUIRE(upload.out == "400");
  REQUIRE(kiln::test::image_record(image_id)["status"] == "queued");
}
