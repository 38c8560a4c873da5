// Incremental message digests on OpenSSL EVP, and the base-name digest.
//
// A Hasher is fed bytes as they stream and yields a lowercase hex digest once.
// Algorithm names are Glance's os_hash_algo names (sha512, sha256, md5, ...);
// an unknown name throws kiln::Error kInvalidArgument. Not thread-safe; one
// Hasher per stream.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace kiln {

class Hasher {
 public:
  explicit Hasher(std::string_view algorithm);
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  ~Hasher();

  void update(std::span<const char> data);
  // REQUIRES: called at most once; no update() afterwards.
  std::string hex_digest();
  const std::string& algorithm() const { return algorithm_; }

 private:
  struct State;
  std::string algorithm_;
  std::unique_ptr<State> state_;
};

// Hex digest of a whole string (small inputs: names, test vectors).
std::string hex_digest_of(std::string_view algorithm, std::string_view data);

// Hex digest of a whole file, read in bounded chunks.
std::string hex_digest_of_file(std::string_view algorithm, const std::string& path);

}  // namespace kiln
