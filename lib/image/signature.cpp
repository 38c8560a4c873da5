#include "kiln/image/signature.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstdint>
#include <ctime>
#include <system_error>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/uuid.h"

namespace kiln::image {

namespace fs = std::filesystem;

namespace {

// Owners of OpenSSL objects, each freed with OpenSSL's own function.
template <auto Free>
struct OpenSslFree {
  template <typename Object>
  void operator()(Object* object) const {
    Free(object);
  }
};
using UniqueBio = std::unique_ptr<BIO, OpenSslFree<BIO_free>>;
using UniqueCertificate = std::unique_ptr<X509, OpenSslFree<X509_free>>;
using UniqueKey = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY_free>>;
using UniqueDigestContext = std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX_free>>;
using UniqueDecodeContext = std::unique_ptr<EVP_ENCODE_CTX, OpenSslFree<EVP_ENCODE_CTX_free>>;
using UniqueStore = std::unique_ptr<X509_STORE, OpenSslFree<X509_STORE_free>>;
using UniqueStoreContext = std::unique_ptr<X509_STORE_CTX, OpenSslFree<X509_STORE_CTX_free>>;

struct CertificateStackFree {
  void operator()(STACK_OF(X509) * stack) const { sk_X509_pop_free(stack, X509_free); }
};
using UniqueCertificateStack = std::unique_ptr<STACK_OF(X509), CertificateStackFree>;

// OpenSSL keeps failures in a per-thread queue that the TLS client reads too:
// an entry left behind here would be blamed on the next TLS call on this
// thread. Every public entry point starts with an empty queue, so the reasons
// it reports are its own, and empties it on its way out.
class OpenSslErrorsCleared {
 public:
  OpenSslErrorsCleared() { ERR_clear_error(); }
  OpenSslErrorsCleared(const OpenSslErrorsCleared&) = delete;
  OpenSslErrorsCleared& operator=(const OpenSslErrorsCleared&) = delete;
  ~OpenSslErrorsCleared() { ERR_clear_error(); }
};

// The first failure in OpenSSL's queue, the cause of the ones after it, for
// the end of a sentence; a failing system call is named by its errno text.
std::string openssl_reason() {
  unsigned long code = ERR_peek_error();
  if (code == 0) return "no reason given";
  if (ERR_SYSTEM_ERROR(code)) return std::error_code(ERR_GET_REASON(code), std::generic_category()).message();
  const char* reason = ERR_reason_error_string(code);
  if (reason != nullptr) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void refuse(const std::string& sentence) {
  throw Error(ErrorCode::kSignatureInvalid, sentence);
}

struct HashMethod {
  std::string_view glance_name;
  const char* openssl_name;
};

constexpr HashMethod kHashMethods[] = {
    {"SHA-224", "SHA224"}, {"SHA-256", "SHA256"}, {"SHA-384", "SHA384"}, {"SHA-512", "SHA512"}};

enum class KeyFamily { kRsaPss, kDsa, kEllipticCurve };

struct KeyType {
  std::string_view glance_name;
  KeyFamily family;
  std::string_view curve;  // OpenSSL's group name, for kEllipticCurve
};

constexpr KeyType kKeyTypes[] = {
    {"RSA-PSS", KeyFamily::kRsaPss, ""},
    {"DSA", KeyFamily::kDsa, ""},
    {"ECC_SECT571K1", KeyFamily::kEllipticCurve, "sect571k1"},
    {"ECC_SECT409K1", KeyFamily::kEllipticCurve, "sect409k1"},
    {"ECC_SECT571R1", KeyFamily::kEllipticCurve, "sect571r1"},
    {"ECC_SECT409R1", KeyFamily::kEllipticCurve, "sect409r1"},
    {"ECC_SECP521R1", KeyFamily::kEllipticCurve, "secp521r1"},
    {"ECC_SECP384R1", KeyFamily::kEllipticCurve, "secp384r1"},
};

template <typename Entry, std::size_t count>
std::string glance_names(const Entry (&table)[count]) {
  std::string names;
  for (const Entry& entry : table) {
    if (!names.empty()) names += ", ";
    names += entry.glance_name;
  }
  return names;
}

const HashMethod& find_hash_method(const std::string& name, const std::string& image_id) {
  for (const HashMethod& method : kHashMethods) {
    if (method.glance_name == name) return method;
  }
  refuse("image " + image_id + " has img_signature_hash_method '" + name + "'; kiln verifies only " +
         glance_names(kHashMethods));
}

const KeyType& find_key_type(const std::string& name, const std::string& image_id) {
  for (const KeyType& type : kKeyTypes) {
    if (type.glance_name == name) return type;
  }
  refuse("image " + image_id + " has img_signature_key_type '" + name + "'; kiln verifies only " +
         glance_names(kKeyTypes));
}

// Glance stores at most 255 characters; anything far longer is not a signature.
constexpr std::size_t kMaxSignatureText = 64 * 1024;

std::vector<unsigned char> decode_signature(const std::string& text, const std::string& image_id) {
  if (text.size() > kMaxSignatureText) {
    refuse("image " + image_id + " has an img_signature of " + std::to_string(text.size()) +
           " characters, too long to be a signature");
  }
  UniqueDecodeContext context(EVP_ENCODE_CTX_new());
  if (!context) throw std::bad_alloc();
  EVP_DecodeInit(context.get());
  // Decoding never grows the text; the slack covers one partial block.
  std::vector<unsigned char> signature(text.size() + 4);
  int decoded = 0;
  int tail = 0;
  bool valid =
      EVP_DecodeUpdate(context.get(), signature.data(), &decoded,
                       reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size())) >= 0 &&
      EVP_DecodeFinal(context.get(), signature.data() + decoded, &tail) == 1;
  if (!valid || decoded + tail == 0) {
    refuse("image " + image_id + " has an img_signature that is not base64 of a signature");
  }
  signature.resize(static_cast<std::size_t>(decoded + tail));
  return signature;
}

// The four properties, or nullopt when the image carries none of them.
struct SignatureProperties {
  std::string signature;
  std::string hash_method;
  std::string key_type;
  std::string certificate_uuid;
};

std::optional<SignatureProperties> signature_properties(const std::map<std::string, std::string>& properties,
                                                        const std::string& image_id) {
  std::vector<std::string> missing;
  for (std::string_view name : kSignatureProperties) {
    if (properties.find(std::string(name)) == properties.end()) missing.emplace_back(name);
  }
  if (missing.size() == kSignatureProperties.size()) return std::nullopt;
  if (!missing.empty()) {
    std::string list;
    for (std::size_t i = 0; i < missing.size(); ++i) {
      if (i > 0) list += i + 1 == missing.size() ? " and " : ", ";
      list += missing[i];
    }
    refuse("image " + image_id + " is partly signed: it lacks " + list +
           ", so its signature cannot be verified");
  }
  return SignatureProperties{properties.at("img_signature"), properties.at("img_signature_hash_method"),
                             properties.at("img_signature_key_type"),
                             properties.at("img_signature_certificate_uuid")};
}

// Who is speaking in every sentence about the certificate.
std::string signer(const std::string& certificate_uuid, const std::string& image_id) {
  return "certificate " + certificate_uuid + " (signer of image " + image_id + ")";
}

// The certificate file's first certificate, and any after it as intermediates.
struct CertificateFile {
  UniqueCertificate certificate;
  UniqueCertificateStack intermediates;
};

CertificateFile load_certificate_file(const fs::path& path, const std::string& who) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    refuse(who + " is not trusted on this host: " + path.string() + " does not exist");
  }
  UniqueBio file(BIO_new_file(path.c_str(), "r"));
  if (!file) refuse("cannot read " + path.string() + ", the file of " + who + ": " + openssl_reason());
  CertificateFile loaded;
  loaded.certificate.reset(PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr));
  if (!loaded.certificate) {
    refuse(path.string() + ", the file of " + who + ", holds no PEM certificate: " + openssl_reason());
  }
  loaded.intermediates.reset(sk_X509_new_null());
  if (!loaded.intermediates) throw std::bad_alloc();
  while (UniqueCertificate next{PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr)}) {
    if (sk_X509_push(loaded.intermediates.get(), next.get()) == 0) throw std::bad_alloc();
    next.release();  // the stack owns it now
  }
  // Reading stops at the end of the file with "no start line"; anything else is damage.
  if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
    refuse(path.string() + ", the file of " + who + ", has a damaged certificate after the first: " +
           openssl_reason());
  }
  ERR_clear_error();
  return loaded;
}

std::string utc_time(const ASN1_TIME* time) {
  std::tm parts{};
  if (ASN1_TIME_to_tm(time, &parts) != 1) return "an unreadable time";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &parts);
  return text;
}

void check_validity_dates(X509* certificate, const std::string& who) {
  const ASN1_TIME* not_before = X509_get0_notBefore(certificate);
  const ASN1_TIME* not_after = X509_get0_notAfter(certificate);
  int before = X509_cmp_current_time(not_before);  // 1: the time is still ahead
  int after = X509_cmp_current_time(not_after);    // -1: the time has passed
  if (before == 0 || after == 0) refuse(who + " has unreadable validity dates");
  if (before > 0) refuse(who + " is not valid yet: its validity starts " + utc_time(not_before));
  if (after < 0) refuse(who + " has expired: its validity ended " + utc_time(not_after));
}

// The store is read for every image so that an operator's CA change takes
// effect without a restart; one image is verified once per download, so the
// cost does not matter.
void check_chain(const CertificateFile& file, const std::string& ca_file, const std::string& who) {
  UniqueStore store(X509_STORE_new());
  if (!store) throw std::bad_alloc();
  if (X509_STORE_load_file(store.get(), ca_file.c_str()) != 1) {
    refuse("cannot check " + who + ": the CA file " + ca_file + " cannot be loaded: " + openssl_reason());
  }
  UniqueStoreContext context(X509_STORE_CTX_new());
  if (!context || X509_STORE_CTX_init(context.get(), store.get(), file.certificate.get(),
                                      file.intermediates.get()) != 1) {
    throw std::bad_alloc();
  }
  if (X509_verify_cert(context.get()) != 1) {
    refuse(who + " is not trusted by the CA file " + ca_file + ": " +
           X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get())));
  }
}

std::string curve_name(EVP_PKEY* key) {
  char name[80];
  std::size_t length = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &length) != 1) {
    return "";
  }
  return std::string(name, length);
}

// "a 2048-bit RSA key", "an EC key on secp384r1".
std::string describe_key(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC")) {
    std::string curve = curve_name(key);
    return "an EC key on " + (curve.empty() ? std::string("an unnamed curve") : curve);
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return "a " + std::to_string(EVP_PKEY_get_bits(key)) + "-bit " + (type != nullptr ? type : "unknown") + " key";
}

bool key_fits(EVP_PKEY* key, const KeyType& type) {
  switch (type.family) {
    case KeyFamily::kRsaPss:
      // A certificate may hold a plain RSA key or one restricted to PSS.
      return EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_is_a(key, "RSA-PSS");
    case KeyFamily::kDsa:
      return EVP_PKEY_is_a(key, "DSA");
    case KeyFamily::kEllipticCurve:
      return EVP_PKEY_is_a(key, "EC") && curve_name(key) == type.curve;
  }
  return false;
}

// A digest-verify context for the key, with cursive's parameters.
UniqueDigestContext start_verification(EVP_PKEY* key, const HashMethod& hash, const KeyType& type,
                                       const std::string& who) {
  UniqueDigestContext context(EVP_MD_CTX_new());
  if (!context) throw std::bad_alloc();
  EVP_PKEY_CTX* key_context = nullptr;  // belongs to `context`
  bool ready = EVP_DigestVerifyInit_ex(context.get(), &key_context, hash.openssl_name, nullptr, nullptr, key,
                                       nullptr) == 1;
  if (ready && type.family == KeyFamily::kRsaPss) {
    // cursive: PSS(mgf=MGF1(hash), salt_length=PSS.MAX_LENGTH). When verifying,
    // OpenSSL 3.0 takes RSA_PSS_SALTLEN_MAX as "exactly the maximum", as
    // pyca/cryptography does, so kiln accepts exactly what Nova accepts.
    ready = EVP_PKEY_CTX_set_rsa_padding(key_context, RSA_PKCS1_PSS_PADDING) == 1 &&
            EVP_PKEY_CTX_set_rsa_mgf1_md_name(key_context, hash.openssl_name, nullptr) == 1 &&
            EVP_PKEY_CTX_set_rsa_pss_saltlen(key_context, RSA_PSS_SALTLEN_MAX) == 1;
  }
  if (!ready) {
    refuse("cannot verify " + std::string(type.glance_name) + " signatures with " +
           std::string(hash.glance_name) + " using " + who + ": " + openssl_reason());
  }
  return context;
}

}  // namespace

struct SignatureVerifier::State {
  std::string image_id;
  std::string certificate_uuid;
  std::string description;
  std::vector<unsigned char> signature;
  UniqueDigestContext context;
  std::uint64_t bytes = 0;
};

SignatureVerifier::SignatureVerifier(std::unique_ptr<State> state) : state_(std::move(state)) {}
SignatureVerifier::SignatureVerifier(SignatureVerifier&&) noexcept = default;
SignatureVerifier& SignatureVerifier::operator=(SignatureVerifier&&) noexcept = default;
SignatureVerifier::~SignatureVerifier() = default;

// Called for every chunk of a download: the error queue is touched only when
// hashing fails, which leaves nothing to verify.
void SignatureVerifier::update(std::span<const char> data) {
  if (EVP_DigestVerifyUpdate(state_->context.get(), data.data(), data.size()) != 1) {
    std::string reason = openssl_reason();
    ERR_clear_error();
    refuse("cannot hash image " + state_->image_id + " for its signature check: " + reason);
  }
  state_->bytes += data.size();
}

void SignatureVerifier::verify() {
  OpenSslErrorsCleared cleared;
  // 0 is a wrong signature, below 0 one OpenSSL cannot even parse: both mean
  // these bytes were not signed with this certificate's key.
  if (EVP_DigestVerifyFinal(state_->context.get(), state_->signature.data(), state_->signature.size()) != 1) {
    refuse("image " + state_->image_id + " does not match its signature: the " + std::to_string(state_->bytes) +
           " bytes downloaded are not what certificate " + state_->certificate_uuid + " signed (" +
           state_->description + ")");
  }
}

const std::string& SignatureVerifier::description() const { return state_->description; }

std::optional<SignatureVerifier> make_signature_verifier(const std::map<std::string, std::string>& image_properties,
                                                         const SignaturePolicy& policy, const std::string& image_id) {
  OpenSslErrorsCleared cleared;
  std::optional<SignatureProperties> properties = signature_properties(image_properties, image_id);
  if (!properties) {
    if (policy.required) refuse("image " + image_id + " is not signed and signatures are required");
    return std::nullopt;
  }
  const HashMethod& hash = find_hash_method(properties->hash_method, image_id);
  const KeyType& type = find_key_type(properties->key_type, image_id);
  std::vector<unsigned char> signature = decode_signature(properties->signature, image_id);
  // The uuid becomes a file name: only the canonical form, which holds no '/' or "..".
  if (!is_canonical_uuid(properties->certificate_uuid)) {
    refuse("image " + image_id + " names its signing certificate '" + properties->certificate_uuid +
           "', which is not a UUID");
  }
  std::string certificate_uuid = normalize_uuid(properties->certificate_uuid);
  std::string who = signer(certificate_uuid, image_id);
  if (policy.certificate_directory.empty()) {
    refuse(who + " cannot be found: no signing certificate directory is configured");
  }

  CertificateFile file = load_certificate_file(policy.certificate_directory / (certificate_uuid + ".pem"), who);
  check_validity_dates(file.certificate.get(), who);
  if (!policy.ca_file.empty()) check_chain(file, policy.ca_file, who);
  UniqueKey key(X509_get_pubkey(file.certificate.get()));
  if (!key) refuse(who + " holds a public key OpenSSL cannot read: " + openssl_reason());
  if (!key_fits(key.get(), type)) {
    refuse("image " + image_id + " says it is signed with " + std::string(type.glance_name) +
           ", but its certificate " + certificate_uuid + " holds " + describe_key(key.get()));
  }

  auto state = std::make_unique<SignatureVerifier::State>();
  state->image_id = image_id;
  state->certificate_uuid = certificate_uuid;
  state->description = std::string(type.glance_name) + " signature with " + std::string(hash.glance_name) +
                       " by certificate " + certificate_uuid;
  state->signature = std::move(signature);
  state->context = start_verification(key.get(), hash, type, who);
  return SignatureVerifier(std::move(state));
}

}  // namespace kiln::image
