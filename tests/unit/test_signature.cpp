// Image signature verification against keys, certificates, a CA and
// signatures made by the openssl command, as an image publisher makes them
// (Glance's signature guide: `openssl dgst -sign`, then `base64 -w 0`).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "assertions.h"
#include "kiln/image/signature.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

using kiln::ErrorCode;
using kiln::image::SignaturePolicy;
namespace fs = std::filesystem;

namespace {

using Properties = std::map<std::string, std::string>;

const std::string kImageId = "5d4c1a9e-7b7f-4d0e-9c59-0a2e6f1b3c44";
const std::vector<std::string> kHashMethods = {"SHA-224", "SHA-256", "SHA-384", "SHA-512"};

std::string openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  return kiln::run_checked({args});
}

// A private key and the uuid its certificate is trusted under.
struct Signer {
  fs::path key;
  std::string certificate_uuid;
};

// Everything the tests sign with, made once: DSA parameters take a second.
// certificates/ is the policy's certificate directory; ca.pem is the CA that
// a policy with a CA file trusts.
class SigningLab {
 public:
  SigningLab() {
    fs::create_directories(certificates());
    fs::create_directories(scratch_ / "issued");
    make_image();
    make_root_ca("ca", "kiln test CA");
    make_root_ca("foreign-ca", "some other CA");
    make_intermediate_ca("intermediate-ca", "ca");

    make_key("rsa", {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"});
    openssl({"genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "dsa_paramgen_bits:2048", "-out",
             path("dsa-parameters.pem")});
    make_key("dsa", {"-paramfile", path("dsa-parameters.pem")});
    by_key_type["RSA-PSS"] = self_signed("rsa");
    by_key_type["DSA"] = self_signed("dsa");
    for (std::string curve : {"secp384r1", "secp521r1", "sect409k1", "sect409r1", "sect571k1", "sect571r1"}) {
      make_key(curve, {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + curve});
      std::string key_type = "ECC_" + curve;
      for (char& c : key_type) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      by_key_type[key_type] = self_signed(curve);
    }

    make_key("other-rsa", {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"});
    other_rsa = self_signed("other-rsa");
    ca_signed = issued("ca", "rsa", {"-days", "2"});
    foreign_ca_signed = issued("foreign-ca", "rsa", {"-days", "2"});
    intermediate_signed = issued("intermediate-ca", "rsa", {"-days", "2"});
    intermediate_signed_with_chain = issued("intermediate-ca", "rsa", {"-days", "2"});
    fs::path with_chain = certificates() / (intermediate_signed_with_chain.certificate_uuid + ".pem");
    kiln::test::write_text(with_chain, kiln::read_file(with_chain) + kiln::read_file(path("intermediate-ca.pem")));
    expired = issued("ca", "rsa", {"-startdate", "20200101000000Z", "-enddate", "20210101000000Z"});
    not_yet_valid = issued("ca", "rsa", {"-startdate", "20980101000000Z", "-enddate", "20990101000000Z"});
  }

  fs::path certificates() const { return scratch_ / "certificates"; }
  std::string ca_file() const { return path("ca.pem"); }
  fs::path image() const { return scratch_ / "image"; }

  std::map<std::string, Signer> by_key_type;  // self-signed, one per Glance key type
  Signer other_rsa;                           // a second self-signed RSA key
  Signer ca_signed;                           // the RSA key, certified by ca.pem
  Signer foreign_ca_signed;                   // the RSA key, certified by another CA
  Signer intermediate_signed;                 // certified by an intermediate of ca.pem
  Signer intermediate_signed_with_chain;      // the same, the intermediate in its file
  Signer expired;                             // the RSA key, certified for 2020 only
  Signer not_yet_valid;                       // the RSA key, certified from 2098 on

 private:
  std::string path(const std::string& name) const { return (scratch_ / name).string(); }

  // 1 MiB and a few odd bytes of repeatable noise.
  void make_image() {
    std::mt19937 noise(20240611);
    std::string bytes(1024 * 1024 + 37, '\0');
    for (char& byte : bytes) byte = static_cast<char>(noise());
    kiln::test::write_text(image(), bytes);
  }

  void make_key(const std::string& name, std::vector<std::string> options) {
    std::vector<std::string> args = {"genpkey"};
    args.insert(args.end(), options.begin(), options.end());
    args.insert(args.end(), {"-out", path(name + ".key")});
    openssl(args);
  }

  Signer self_signed(const std::string& key) {
    Signer signer{path(key + ".key"), kiln::test::random_uuid()};
    openssl({"req", "-x509", "-new", "-key", signer.key.string(), "-subj", "/CN=" + key + " image signer",
             "-days", "2", "-out", (certificates() / (signer.certificate_uuid + ".pem")).string()});
    return signer;
  }

  void make_root_ca(const std::string& name, const std::string& common_name) {
    make_key(name, {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"});
    // Debian's openssl.cnf gives `req -x509` the v3_ca extensions: CA:true.
    openssl({"req", "-x509", "-new", "-key", path(name + ".key"), "-subj", "/CN=" + common_name, "-days", "2",
             "-out", path(name + ".pem")});
    make_ca_config(name);
  }

  void make_intermediate_ca(const std::string& name, const std::string& parent) {
    make_key(name, {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"});
    openssl({"req", "-new", "-key", path(name + ".key"), "-subj", "/CN=" + name, "-out", path(name + ".csr")});
    openssl({"ca", "-batch", "-notext", "-config", path(parent + ".cnf"), "-extensions", "intermediate_ca",
             "-cert", path(parent + ".pem"), "-keyfile", path(parent + ".key"), "-in", path(name + ".csr"),
             "-out", path(name + ".pem"), "-days", "2"});
    make_ca_config(name);
  }

  // What `openssl ca` needs to issue certificates as CA `name`.
  void make_ca_config(const std::string& name) {
    kiln::test::write_text(scratch_ / (name + ".index"), "");
    kiln::test::write_text(scratch_ / (name + ".serial"), "01\n");
    kiln::test::write_text(scratch_ / (name + ".cnf"),
                           "[ca]\ndefault_ca = this_ca\n"
                           "[this_ca]\ndatabase = " + path(name + ".index") + "\nserial = " + path(name + ".serial") +
                               "\nnew_certs_dir = " + path("issued") +
                               "\ndefault_md = sha256\npolicy = any_name\nunique_subject = no\n"
                               "[any_name]\ncommonName = supplied\n"
                               "[intermediate_ca]\nbasicConstraints = critical, CA:true\n");
  }

  // A certificate for `key` issued by CA `ca`; `validity` is -days or -startdate/-enddate,
  // which `openssl ca` takes and `openssl x509` in OpenSSL 3.0 does not.
  Signer issued(const std::string& ca, const std::string& key, std::vector<std::string> validity) {
    Signer signer{path(key + ".key"), kiln::test::random_uuid()};
    std::string request = path(signer.certificate_uuid + ".csr");
    openssl({"req", "-new", "-key", signer.key.string(), "-subj", "/CN=" + key + " issued by " + ca, "-out",
             request});
    std::vector<std::string> args = {"ca", "-batch", "-notext", "-config", path(ca + ".cnf"), "-cert",
                                     path(ca + ".pem"), "-keyfile", path(ca + ".key"), "-in", request, "-out",
                                     (certificates() / (signer.certificate_uuid + ".pem")).string()};
    args.insert(args.end(), validity.begin(), validity.end());
    openssl(args);
    return signer;
  }

  kiln::test::ScratchDir scratch_;
};

const SigningLab& lab() {
  static const SigningLab made;
  return made;
}

// The base64 signature of `data`, made as Glance's signature guide makes it.
std::string sign(const Signer& signer, const std::string& key_type, const std::string& hash_method,
                 const fs::path& data) {
  std::string digest_option = "-";
  for (char c : hash_method) {
    if (c != '-') digest_option.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  kiln::test::ScratchDir scratch;
  std::vector<std::string> args = {"dgst", digest_option, "-sign", signer.key.string(), "-out",
                                   (scratch / "signature").string()};
  if (key_type == "RSA-PSS") {
    args.insert(args.end(), {"-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:max"});
  }
  args.push_back(data.string());
  openssl(args);
  std::string encoded = kiln::run_checked({{"base64", "-w", "0", (scratch / "signature").string()}});
  while (!encoded.empty() && encoded.back() == '\n') encoded.pop_back();
  return encoded;
}

Properties signature_properties(const std::string& signature, const std::string& hash_method,
                                const std::string& key_type, const std::string& certificate_uuid) {
  return {{"img_signature", signature},
          {"img_signature_hash_method", hash_method},
          {"img_signature_key_type", key_type},
          {"img_signature_certificate_uuid", certificate_uuid},
          {"hw_disk_bus", "virtio"}};
}

// An RSA-PSS SHA-256 signature of the lab's image by `signer`, claimed by certificate `certificate_uuid`.
Properties rsa_signed(const Signer& signer, const std::string& certificate_uuid) {
  return signature_properties(sign(signer, "RSA-PSS", "SHA-256", lab().image()), "SHA-256", "RSA-PSS",
                              certificate_uuid);
}

SignaturePolicy trusting_directory() { return SignaturePolicy{lab().certificates(), "", false}; }
SignaturePolicy trusting_ca() { return SignaturePolicy{lab().certificates(), lab().ca_file(), false}; }

// Feeds `bytes` in uneven chunks, as a download arrives, and verifies.
void feed_and_verify(kiln::image::SignatureVerifier& verifier, const std::string& bytes) {
  std::size_t chunk = 1;
  for (std::size_t offset = 0; offset < bytes.size(); offset += chunk, chunk = chunk * 3 + 7) {
    verifier.update(std::span<const char>(bytes).subspan(offset, std::min(chunk, bytes.size() - offset)));
  }
  verifier.verify();
}

void verify_image(const Properties& properties, const SignaturePolicy& policy, const std::string& bytes) {
  auto verifier = kiln::image::make_signature_verifier(properties, policy, kImageId);
  REQUIRE(verifier.has_value());
  feed_and_verify(*verifier, bytes);
}

}  // namespace

TEST_CASE("a signature verifies for every key type and hash method") {
  std::string image = kiln::read_file(lab().image());
  for (const auto& [key_type, signer] : lab().by_key_type) {
    for (const std::string& hash_method : kHashMethods) {
      INFO(key_type << " with " << hash_method);
      Properties properties =
          signature_properties(sign(signer, key_type, hash_method, lab().image()), hash_method, key_type,
                               signer.certificate_uuid);
      auto verifier = kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId);
      REQUIRE(verifier.has_value());
      REQUIRE(verifier->description() ==
              key_type + " signature with " + hash_method + " by certificate " + signer.certificate_uuid);
      feed_and_verify(*verifier, image);
    }
  }
}

TEST_CASE("one flipped byte in the image fails verification and the error names the image and certificate") {
  std::string image = kiln::read_file(lab().image());
  image[image.size() / 2] ^= 0x01;
  for (const auto& [key_type, signer] : lab().by_key_type) {
    INFO(key_type);
    Properties properties =
        signature_properties(sign(signer, key_type, "SHA-256", lab().image()), "SHA-256", key_type,
                             signer.certificate_uuid);
    REQUIRE_KILN_ERROR_MENTIONS(verify_image(properties, trusting_directory(), image),
                                ErrorCode::kSignatureInvalid,
                                "image " + kImageId + " does not match its signature: the 1048613 bytes "
                                "downloaded are not what certificate " + signer.certificate_uuid + " signed");
  }
}

TEST_CASE("an image that was cut short or has bytes appended fails verification") {
  std::string image = kiln::read_file(lab().image());
  Properties properties = rsa_signed(lab().by_key_type.at("RSA-PSS"), lab().by_key_type.at("RSA-PSS").certificate_uuid);
  REQUIRE_KILN_ERROR(verify_image(properties, trusting_directory(), image.substr(0, image.size() - 1)),
                     ErrorCode::kSignatureInvalid);
  REQUIRE_KILN_ERROR(verify_image(properties, trusting_directory(), image + '\0'), ErrorCode::kSignatureInvalid);
}

TEST_CASE("a signature checked against another signer's certificate fails") {
  std::string image = kiln::read_file(lab().image());
  Properties properties = rsa_signed(lab().by_key_type.at("RSA-PSS"), lab().other_rsa.certificate_uuid);
  REQUIRE_KILN_ERROR_MENTIONS(verify_image(properties, trusting_directory(), image), ErrorCode::kSignatureInvalid,
                              "not what certificate " + lab().other_rsa.certificate_uuid + " signed");
}

TEST_CASE("an RSA-PSS signature with a salt shorter than the maximum fails as it fails in Nova") {
  // cursive verifies with PSS.MAX_LENGTH, which pyca/cryptography enforces exactly.
  kiln::test::ScratchDir scratch;
  const Signer& signer = lab().by_key_type.at("RSA-PSS");
  openssl({"dgst", "-sha256", "-sign", signer.key.string(), "-sigopt", "rsa_padding_mode:pss", "-sigopt",
           "rsa_pss_saltlen:digest", "-out", (scratch / "signature").string(), lab().image().string()});
  std::string encoded = kiln::run_checked({{"base64", "-w", "0", (scratch / "signature").string()}});
  Properties properties = signature_properties(encoded, "SHA-256", "RSA-PSS", signer.certificate_uuid);
  REQUIRE_KILN_ERROR(verify_image(properties, trusting_directory(), kiln::read_file(lab().image())),
                     ErrorCode::kSignatureInvalid);
}

TEST_CASE("an expired certificate is refused before any byte is downloaded") {
  Properties properties = rsa_signed(lab().by_key_type.at("RSA-PSS"), lab().expired.certificate_uuid);
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid,
                              "certificate " + lab().expired.certificate_uuid + " (signer of image " + kImageId +
                                  ") has expired: its validity ended 2021-01-01 00:00:00 UTC");
}

TEST_CASE("a certificate that is not valid yet is refused") {
  Properties properties = rsa_signed(lab().by_key_type.at("RSA-PSS"), lab().not_yet_valid.certificate_uuid);
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid,
                              "is not valid yet: its validity starts 2098-01-01 00:00:00 UTC");
}

TEST_CASE("with a CA file configured only certificates the CA signed pass") {
  std::string image = kiln::read_file(lab().image());
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  verify_image(rsa_signed(rsa, lab().ca_signed.certificate_uuid), trusting_ca(), image);

  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, lab().foreign_ca_signed.certificate_uuid), trusting_ca(),
                                           kImageId),
      ErrorCode::kSignatureInvalid,
      "certificate " + lab().foreign_ca_signed.certificate_uuid + " (signer of image " + kImageId +
          ") is not trusted by the CA file " + lab().ca_file() + ": unable to get local issuer certificate");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, rsa.certificate_uuid), trusting_ca(), kImageId),
      ErrorCode::kSignatureInvalid, "is not trusted by the CA file " + lab().ca_file() + ": self-signed certificate");
  // The same self-signed certificate is trusted by its place in the directory alone.
  verify_image(rsa_signed(rsa, rsa.certificate_uuid), trusting_directory(), image);
}

TEST_CASE("an intermediate CA certificate is taken from the signing certificate's file") {
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  verify_image(rsa_signed(rsa, lab().intermediate_signed_with_chain.certificate_uuid), trusting_ca(),
               kiln::read_file(lab().image()));
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, lab().intermediate_signed.certificate_uuid),
                                           trusting_ca(), kImageId),
      ErrorCode::kSignatureInvalid, "unable to get local issuer certificate");
}

TEST_CASE("a CA file that cannot be loaded refuses every signed image") {
  SignaturePolicy policy = trusting_ca();
  policy.ca_file = (lab().certificates() / "no-such-ca.pem").string();
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, lab().ca_signed.certificate_uuid), policy, kImageId),
      ErrorCode::kSignatureInvalid, "the CA file " + policy.ca_file + " cannot be loaded");
}

TEST_CASE("an image with only some of the signature properties is refused and the error names the missing ones") {
  Properties properties = rsa_signed(lab().by_key_type.at("RSA-PSS"), lab().by_key_type.at("RSA-PSS").certificate_uuid);
  properties.erase("img_signature_key_type");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid,
                              "image " + kImageId + " is partly signed: it lacks img_signature_key_type, so");
  properties.erase("img_signature");
  properties.erase("img_signature_certificate_uuid");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid,
                              "it lacks img_signature, img_signature_key_type and img_signature_certificate_uuid");
}

TEST_CASE("an unsigned image passes unverified unless signatures are required") {
  Properties unsigned_image = {{"hw_disk_bus", "virtio"}};
  REQUIRE_FALSE(kiln::image::make_signature_verifier(unsigned_image, trusting_directory(), kImageId).has_value());
  SignaturePolicy required = trusting_directory();
  required.required = true;
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(unsigned_image, required, kImageId),
                              ErrorCode::kSignatureInvalid,
                              "image " + kImageId + " is not signed and signatures are required");
}

TEST_CASE("a key type that does not match the certificate's key is refused") {
  const auto& signers = lab().by_key_type;
  struct Mismatch {
    std::string claimed;
    std::string certificate_of;
    std::string holds;
  };
  for (const Mismatch& mismatch : {Mismatch{"RSA-PSS", "ECC_SECP384R1", "holds an EC key on secp384r1"},
                                   Mismatch{"ECC_SECP521R1", "ECC_SECP384R1", "holds an EC key on secp384r1"},
                                   Mismatch{"ECC_SECT571K1", "ECC_SECT571R1", "holds an EC key on sect571r1"},
                                   Mismatch{"DSA", "RSA-PSS", "holds a 2048-bit RSA key"},
                                   Mismatch{"ECC_SECP384R1", "DSA", "holds a 2048-bit DSA key"}}) {
    INFO(mismatch.claimed << " claimed for the certificate of " << mismatch.certificate_of);
    const Signer& signer = signers.at(mismatch.certificate_of);
    Properties properties = signature_properties(sign(signer, mismatch.certificate_of, "SHA-256", lab().image()),
                                                 "SHA-256", mismatch.claimed, signer.certificate_uuid);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(properties, trusting_directory(), kImageId),
                                ErrorCode::kSignatureInvalid,
                                "image " + kImageId + " says it is signed with " + mismatch.claimed +
                                    ", but its certificate " + signer.certificate_uuid + " " + mismatch.holds);
  }
}

TEST_CASE("a certificate uuid that is not a uuid is refused and never becomes a path") {
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  // A file the escaping names below would reach if they were joined to the directory.
  kiln::test::write_text(lab().certificates().parent_path() / "outside.pem",
                         kiln::read_file(lab().certificates() / (rsa.certificate_uuid + ".pem")));
  for (const std::string& bad : std::vector<std::string>{
           "../outside", "../" + rsa.certificate_uuid, rsa.certificate_uuid + "/../../outside",
           "/etc/ssl/certs/ca-certificates.crt", "", rsa.certificate_uuid + ".pem"}) {
    INFO(bad);
    REQUIRE_KILN_ERROR_MENTIONS(
        kiln::image::make_signature_verifier(rsa_signed(rsa, bad), trusting_directory(), kImageId),
        ErrorCode::kSignatureInvalid, "names its signing certificate '" + bad + "', which is not a UUID");
  }
}

TEST_CASE("a certificate uuid in capitals finds its lowercase file") {
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  std::string upper = rsa.certificate_uuid;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  verify_image(rsa_signed(rsa, upper), trusting_directory(), kiln::read_file(lab().image()));
}

TEST_CASE("a certificate missing from the directory or not a certificate at all is refused") {
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  std::string unknown = kiln::test::random_uuid();
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, unknown), trusting_directory(), kImageId),
      ErrorCode::kSignatureInvalid,
      "certificate " + unknown + " (signer of image " + kImageId + ") is not trusted on this host: " +
          (lab().certificates() / (unknown + ".pem")).string() + " does not exist");

  kiln::test::ScratchDir scratch;
  std::string garbled = kiln::test::random_uuid();
  kiln::test::write_text(scratch / (garbled + ".pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, garbled), SignaturePolicy{scratch.path(), "", false},
                                           kImageId),
      ErrorCode::kSignatureInvalid, "holds no PEM certificate");

  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::image::make_signature_verifier(rsa_signed(rsa, rsa.certificate_uuid), SignaturePolicy{}, kImageId),
      ErrorCode::kSignatureInvalid, "no signing certificate directory is configured");
}

TEST_CASE("an unknown hash method or key type or a signature that is not base64 is refused") {
  const Signer& rsa = lab().by_key_type.at("RSA-PSS");
  Properties properties = rsa_signed(rsa, rsa.certificate_uuid);

  Properties md5 = properties;
  md5["img_signature_hash_method"] = "MD5";
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(md5, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid,
                              "has img_signature_hash_method 'MD5'; kiln verifies only SHA-224, SHA-256, "
                              "SHA-384, SHA-512");

  Properties pkcs1 = properties;
  pkcs1["img_signature_key_type"] = "RSA";
  REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(pkcs1, trusting_directory(), kImageId),
                              ErrorCode::kSignatureInvalid, "has img_signature_key_type 'RSA'");

  for (std::string bad : {"", "not base64!", "QUJD=QUJD", "QQ"}) {
    INFO(bad);
    Properties garbled = properties;
    garbled["img_signature"] = bad;
    REQUIRE_KILN_ERROR_MENTIONS(kiln::image::make_signature_verifier(garbled, trusting_directory(), kImageId),
                                ErrorCode::kSignatureInvalid, "has an img_signature that is not base64");
  }
}
