#include "kiln/util/hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln {

struct Hasher::State {
  EVP_MD* md = nullptr;
  EVP_MD_CTX* context = nullptr;
  ~State() {
    EVP_MD_CTX_free(context);
    EVP_MD_free(md);
  }
};

Hasher::Hasher(std::string_view algorithm)
    : algorithm_(algorithm), state_(std::make_unique<State>()) {
  state_->md = EVP_MD_fetch(nullptr, algorithm_.c_str(), nullptr);
  if (state_->md == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "unknown hash algorithm '" + algorithm_ + "'");
  }
  state_->context = EVP_MD_CTX_new();
  if (state_->context == nullptr || EVP_DigestInit_ex(state_->context, state_->md, nullptr) != 1) {
    throw Error(ErrorCode::kInvalidArgument, "cannot initialise hash algorithm '" + algorithm_ + "'");
  }
}

Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;
Hasher::~Hasher() = default;

void Hasher::update(std::span<const char> data) {
  EVP_DigestUpdate(state_->context, data.data(), data.size());
}

std::string Hasher::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(state_->context, digest, &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

std::string hex_digest_of(std::string_view algorithm, std::string_view data) {
  Hasher hasher(algorithm);
  hasher.update(data);
  return hasher.hex_digest();
}

std::string hex_digest_of_file(std::string_view algorithm, const std::string& path) {
  Hasher hasher(algorithm);
  UniqueFd fd = open_file(path, O_RDONLY);
  std::vector<char> buffer(1 << 20);
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_io_error("cannot read " + path, errno);
    }
    if (got == 0) break;
    hasher.update(std::span<const char>(buffer.data(), static_cast<std::size_t>(got)));
  }
  return hasher.hex_digest();
}

}  // namespace kiln
