#include "kiln/util/data_digest.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln {

namespace {

constexpr std::size_t kZerosSize = 64 * 1024;
alignas(64) const char kZeros[kZerosSize] = {};

void put_le64(unsigned char* out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}

}  // namespace

bool all_zero(std::span<const char> bytes) {
  while (!bytes.empty()) {
    std::size_t take = std::min(bytes.size(), kZerosSize);
    if (std::memcmp(bytes.data(), kZeros, take) != 0) return false;
    bytes = bytes.subspan(take);
  }
  return true;
}

struct DataDigest::State {
  XXH3_state_t* xxh = nullptr;
  ~State() { XXH3_freeState(xxh); }
};

DataDigest::DataDigest() : state_(std::make_unique<State>()) {
  state_->xxh = XXH3_createState();
  if (state_->xxh == nullptr || XXH3_128bits_reset(state_->xxh) != XXH_OK) throw std::bad_alloc();
}

DataDigest::DataDigest(DataDigest&&) noexcept = default;
DataDigest& DataDigest::operator=(DataDigest&&) noexcept = default;
DataDigest::~DataDigest() = default;

void DataDigest::add_data_block(std::uint64_t offset, std::span<const char> block) {
  unsigned char prefix[8];
  put_le64(prefix, offset);
  XXH3_128bits_update(state_->xxh, prefix, sizeof prefix);
  XXH3_128bits_update(state_->xxh, block.data(), block.size());
}

void DataDigest::add(std::uint64_t offset, std::span<const char> data) {
  while (!data.empty()) {
    std::span<const char> block = data.first(std::min(kBlock, data.size()));
    if (!all_zero(block)) add_data_block(offset, block);
    offset += block.size();
    data = data.subspan(block.size());
  }
}

std::string DataDigest::hex_digest(std::uint64_t file_size) {
  unsigned char suffix[8];
  put_le64(suffix, file_size);
  XXH3_128bits_update(state_->xxh, suffix, sizeof suffix);
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_->xxh));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char byte : canonical.digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 0xf]);
  }
  return hex;
}

std::string data_digest_of_file(const std::filesystem::path& path) {
  constexpr std::uint64_t kBlock = DataDigest::kBlock;
  UniqueFd fd = open_file(path, O_RDONLY | O_NOFOLLOW);
  off_t end = ::lseek(fd.get(), 0, SEEK_END);
  if (end < 0) throw_io_error("cannot seek in " + path.string(), errno);
  const auto size = static_cast<std::uint64_t>(end);
  DataDigest digest;
  std::vector<char> buffer(1 << 20);  // a multiple of kBlock
  std::uint64_t next = 0;             // the first offset not fed yet (a multiple of kBlock)
  while (next < size) {
    off_t data = ::lseek(fd.get(), static_cast<off_t>(next), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0) throw_io_error("cannot seek in " + path.string(), errno);
    off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) throw_io_error("cannot seek in " + path.string(), errno);
    // Extents follow the filesystem's block size, which may be smaller than
    // kBlock: widen to whole kBlocks (what is read of a hole reads as zeros).
    std::uint64_t position = std::max(next, static_cast<std::uint64_t>(data) / kBlock * kBlock);
    std::uint64_t stop = std::min(size, (static_cast<std::uint64_t>(hole) + kBlock - 1) / kBlock * kBlock);
    while (position < stop) {
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(stop - position, buffer.size()));
      ssize_t got = ::pread(fd.get(), buffer.data(), want, static_cast<off_t>(position));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw_io_error("cannot read " + path.string(), errno);
      if (got == 0) throw_io_error("cannot read " + path.string() + ": it shrank while being read", EIO);
      // A short read may end mid-block: feed whole blocks, re-read the rest.
      std::size_t whole = static_cast<std::size_t>(got);
      if (position + whole < stop) whole = whole / kBlock * kBlock;
      if (whole == 0) continue;
      digest.add(position, std::span<const char>(buffer.data(), whole));
      position += whole;
    }
    next = stop;
  }
  return digest.hex_digest(size);
}

}  // namespace kiln
