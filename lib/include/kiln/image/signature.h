// Image signature verification, as Nova verifies Glance's img_signature.
//
// A signed image carries four Glance properties: img_signature (base64 of the
// signature over the image bytes exactly as Glance stores them, before any
// conversion), img_signature_hash_method (SHA-224, SHA-256, SHA-384,
// SHA-512), img_signature_key_type (RSA-PSS, DSA, or ECC_<curve> for
// SECT571K1, SECT409K1, SECT571R1, SECT409R1, SECP521R1, SECP384R1) and
// img_signature_certificate_uuid (the signer's X.509 certificate, which Nova
// fetches from Barbican). kiln has no key manager: the operator places each
// trusted signer's certificate at <certificate_directory>/<uuid>.pem.
//
// make_signature_verifier() makes every check that needs no image bytes (the
// properties are complete and well formed, the certificate exists, is within
// its validity dates, chains to the configured CA and holds a key of the
// declared type), so that no download starts for an image that cannot pass.
// The SignatureVerifier it returns is fed the downloaded bytes as they stream,
// keeps none of them, and says at the end whether they are the signed ones.
// Signatures mean what they mean to cursive, the library Nova and Glance
// verify with: RSA-PSS with MGF1 over the same hash and the maximum salt
// length, DSA and ECDSA over the hash, each signature as the DER that
// `openssl dgst -sign` writes. kiln is stricter than cursive in one place: an
// ECC_<curve> key type must name the certificate's curve.
//
// Every failure is a kiln::Error kSignatureInvalid whose sentence names the
// image, the certificate when one is involved, and what was wrong.
// make_signature_verifier() is thread-safe; a SignatureVerifier is not: one
// per download.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace kiln::image {

// The image properties that make up a signature, as Glance names them.
inline constexpr std::array<std::string_view, 4> kSignatureProperties = {
    "img_signature", "img_signature_hash_method", "img_signature_key_type",
    "img_signature_certificate_uuid"};

struct SignaturePolicy {
  // Trusted signing certificates, one PEM file per certificate named
  // <lowercase uuid>.pem after img_signature_certificate_uuid. A file may
  // carry intermediate CA certificates after the signing certificate.
  std::filesystem::path certificate_directory;
  // A PEM file of CA certificates every signing certificate must chain to;
  // "" = no chain check (a certificate is trusted by being in the directory).
  std::string ca_file;
  // Refuse images that carry no signature properties at all.
  bool required = false;
};

class SignatureVerifier {
 public:
  SignatureVerifier(SignatureVerifier&&) noexcept;
  SignatureVerifier& operator=(SignatureVerifier&&) noexcept;
  ~SignatureVerifier();

  // Feeds the next bytes of the image, in order, in chunks of any size.
  // REQUIRES: verify() has not been called.
  void update(std::span<const char> data);

  // Returns when the bytes fed so far are exactly the signed image; else
  // throws kiln::Error kSignatureInvalid naming the image and certificate.
  // REQUIRES: called once, after the last update().
  void verify();

  // What is checked, for logs: "RSA-PSS signature with SHA-256 by certificate <uuid>".
  const std::string& description() const;

 private:
  struct State;
  explicit SignatureVerifier(std::unique_ptr<State> state);
  friend std::optional<SignatureVerifier> make_signature_verifier(
      const std::map<std::string, std::string>& image_properties, const SignaturePolicy& policy,
      const std::string& image_id);

  std::unique_ptr<State> state_;
};

// The verifier for image `image_id` with Glance properties `image_properties`:
// nullopt when the image carries none of kSignatureProperties and the policy
// does not require signatures. Throws kiln::Error kSignatureInvalid when only
// some of the properties are present (naming the missing ones), when the
// image is unsigned and signatures are required, when a property is malformed
// or names an unknown hash method or key type, when the certificate uuid is
// not a canonical UUID (so it can never name a path outside the directory),
// and when the certificate is missing, unreadable, outside its validity
// dates, not signed by the policy's CA, or holds a key of another type (or
// another curve) than img_signature_key_type says.
std::optional<SignatureVerifier> make_signature_verifier(
    const std::map<std::string, std::string>& image_properties, const SignaturePolicy& policy,
    const std::string& image_id);

}  // namespace kiln::image
