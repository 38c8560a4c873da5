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

// Holes (SEEK_HOLE) are hashed from a buffer of zeros instead of being read:
// a sparse 1 GiB base with 300 MiB of data costs 300 MiB of reads, not 1 GiB
// of kernel-zeroed pages.
std::string hex_digest_of_file(std::string_view algorithm, const std::string& path) {
  Hasher hasher(algorithm);
  UniqueFd fd = open_file(path, O_RDONLY);
  std::vector<char> buffer(1 << 20);
  static const std::vector<char> zeros(1 << 20, 0);
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) throw_io_error("cannot seek in " + path, errno);
  off_t position = 0;
  while (position < size) {
    off_t data = ::lseek(fd.get(), position, SEEK_DATA);
    if (data < 0) data = size;  // ENXIO: only a hole is left
    for (; position < data; position += std::min<off_t>(data - position, static_cast<off_t>(zeros.size()))) {
      hasher.update(std::span<const char>(zeros.data(), static_cast<std::size_t>(
                                                            std::min<off_t>(data - position, static_cast<off_t>(zeros.size())))));
    }
    if (position >= size) break;
    off_t hole = ::lseek(fd.get(), position, SEEK_HOLE);
    if (hole < 0) hole = size;
    while (position < hole) {
      std::size_t want = static_cast<std::size_t>(std::min<off_t>(hole - position, static_cast<off_t>(buffer.size())));
      ssize_t got = ::pread(fd.get(), buffer.data(), want, position);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw_io_error("cannot read " + path, got < 0 ? errno : EIO);
      hasher.update(std::span<const char>(buffer.data(), static_cast<std::size_t>(got)));
      position += got;
    }
  }
  return hasher.hex_digest();
}

}  // namespace kiln
