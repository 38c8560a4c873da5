#include "kiln/image/qcow2_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>

#include "cluster_pipeline.h"
#include "kiln/util/data_digest.h"

namespace kiln::image {

namespace {

// The qcow2 header's fields (docs/interop/qcow2.txt), big-endian.
constexpr std::uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr std::size_t kVersion = 4;
constexpr std::size_t kBackingFileOffset = 8;
constexpr std::size_t kClusterBits = 20;
constexpr std::size_t kSize = 24;
constexpr std::size_t kCryptMethod = 32;
constexpr std::size_t kL1Size = 36;
constexpr std::size_t kL1TableOffset = 40;
constexpr std::size_t kRefcountTableOffset = 48;
constexpr std::size_t kRefcountTableClusters = 56;
constexpr std::size_t kNbSnapshots = 60;
constexpr std::size_t kIncompatibleFeatures = 72;  // version 3 from here on
constexpr std::size_t kRefcountOrder = 96;
constexpr std::size_t kHeaderLength = 100;
constexpr std::size_t kCompressionType = 104;  // one byte, when header_length covers it
constexpr std::size_t kV2HeaderLength = 72;
constexpr std::size_t kV3HeaderLength = 104;
constexpr std::uint64_t kHeaderRead = 512;  // the smallest cluster: the header always fits

// The incompatible feature bits this reader accepts: the compression type
// (bit 3), set exactly when compressed clusters are zstd. Dirty (0), corrupt
// (1), external data file (2) and extended L2 entries (4), and any unknown
// bit, are qemu-img's.
constexpr std::uint64_t kIncompatibleCompressionType = 1u << 3;
constexpr std::uint64_t kIncompatibleAccepted = kIncompatibleCompressionType;
constexpr unsigned kCompressionZlib = 0;
constexpr unsigned kCompressionZstd = 1;

// L1 and standard L2 entries.
constexpr std::uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr std::uint64_t kL1Reserved = 0x7f000000000001ffull;
constexpr std::uint64_t kL2Copied = 1ull << 63;
constexpr std::uint64_t kL2Compressed = 1ull << 62;
constexpr std::uint64_t kL2Reserved = 0x3f000000000001feull;
constexpr std::uint64_t kL2Zero = 1;
// A compressed cluster's descriptor (bits 0-61): x = 62 - (cluster_bits - 8)
// low bits of host byte offset, then the count of 512-byte sectors it spans
// beyond the first.
constexpr std::uint64_t kCompressedSector = 512;

std::uint32_t be32(std::span<const char> bytes, std::size_t at) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

std::uint64_t be64(std::span<const char> bytes, std::size_t at) {
  return (std::uint64_t{be32(bytes, at)} << 32) | be32(bytes, at + 4);
}

}  // namespace

Qcow2Stream::Qcow2Stream(std::filesystem::path output, std::uint64_t image_size, std::uint64_t max_written_bytes,
                         bool decompress)
    : output_path_(std::move(output)), image_size_(image_size), max_written_(max_written_bytes), decompress_(decompress) {
  // Saturating: kMaxExpansion times the image, in bytes of decompressed clusters.
  max_decompressed_ = image_size_ > std::numeric_limits<std::uint64_t>::max() / kMaxExpansion
                          ? std::numeric_limits<std::uint64_t>::max()
                          : image_size_ * kMaxExpansion;
  if (image_size_ < kHeaderRead) {
    fail("the image is smaller than a qcow2 header cluster");
    return;
  }
  targets_.emplace(0, Target{Kind::kHeader, kHeaderRead, 0, {}});
}

Qcow2Stream::~Qcow2Stream() = default;

const std::string& Qcow2Stream::why() const {
  static const std::string none;
  return failure_ ? *failure_ : none;
}

void Qcow2Stream::fail(std::string why) {
  if (failure_) return;
  failure_ = std::move(why);
  if (pipeline_) pipeline_->cancel();
  targets_.clear();
  late_.clear();
  claimed_ = {};
  compressed_ = {};
  if (output_.valid()) {
    ::unlink(output_path_.c_str());
    output_ = UniqueFd();
  }
}

void Qcow2Stream::feed(std::span<const char> data) {
  if (failed() || data.empty()) return;
  if (data.size() > image_size_ - std::min(image_size_, position_)) {
    fail("more bytes arrived than the image's size");
    return;
  }
  process(position_, data);
  position_ += data.size();
}

// Serves, from `data` (the image's bytes at `offset`), every wanted range it
// covers, in host-offset order; a table completed here may want ranges later
// in the same bytes, which are then served too.
void Qcow2Stream::process(std::uint64_t offset, std::span<const char> data) {
  const std::uint64_t end = offset + data.size();
  while (!failed() && !targets_.empty()) {
    auto it = targets_.begin();
    const std::uint64_t host = it->first;
    Target& target = it->second;
    const std::uint64_t start = host + target.filled;
    if (start >= end) break;
    if (start < offset) {
      // Only a compressed cluster that begins inside the one before it (qemu
      // packs them byte by byte, and a descriptor's length rounds up to a
      // sector) can have been passed while that one was still arriving: it is
      // read back from the complete image at finish(), like any late range.
      if (target.kind != Kind::kCompressed || target.filled != 0) {
        fail("internal: a wanted range was passed");
        return;
      }
      late_.insert(targets_.extract(it));
      continue;
    }
    const std::uint64_t count = std::min(host + target.length, end) - start;
    std::span<const char> slice = data.subspan(start - offset, count);
    if (target.kind == Kind::kData) {
      emit(target.guest + target.filled, slice);
    } else {
      target.bytes.insert(target.bytes.end(), slice.begin(), slice.end());
    }
    target.filled += count;
    if (target.filled < target.length) break;  // the rest comes with the next bytes
    Target done = std::move(target);
    targets_.erase(it);
    complete(host, done, done.bytes);
  }
}

void Qcow2Stream::complete(std::uint64_t, Target& target, std::span<const char> bytes) {
  switch (target.kind) {
    case Kind::kHeader: parse_header(bytes); break;
    case Kind::kL1: parse_l1(bytes); break;
    case Kind::kL2: parse_l2(target.guest, bytes); break;
    case Kind::kData: break;  // written as it came
    case Kind::kCompressed: decompress(target.guest, bytes); break;
  }
}

void Qcow2Stream::parse_header(std::span<const char> h) {
  if (be32(h, 0) != kMagic) return fail("not a qcow2 image");
  const std::uint32_t version = be32(h, kVersion);
  if (version != 2 && version != 3) return fail("qcow2 version " + std::to_string(version));
  if (be64(h, kBackingFileOffset) != 0) return fail("a backing file");
  const std::uint32_t bits = be32(h, kClusterBits);
  if (bits < 9 || bits > 21) return fail("cluster_bits " + std::to_string(bits));
  if (be32(h, kCryptMethod) != 0) return fail("encryption");
  if (be32(h, kNbSnapshots) != 0) return fail("internal snapshots");
  version_ = version;
  cluster_bits_ = bits;
  cluster_size_ = std::uint64_t{1} << bits;
  if (version == 3) {
    const std::uint32_t length = be32(h, kHeaderLength);
    if (length < kV3HeaderLength || length > cluster_size_) return fail("header_length " + std::to_string(length));
    const std::uint64_t incompatible = be64(h, kIncompatibleFeatures);
    if ((incompatible & ~kIncompatibleAccepted) != 0) return fail("incompatible features");
    if (be32(h, kRefcountOrder) > 6) return fail("refcount_order");
    // qemu's rule (validate_compression_type): zlib or zstd, and the feature
    // bit set exactly when it is not zlib.
    const unsigned type = length > kCompressionType ? static_cast<unsigned char>(h[kCompressionType]) : kCompressionZlib;
    if (type != kCompressionZlib && type != kCompressionZstd) return fail("compression type " + std::to_string(type));
    if ((type == kCompressionZstd) != ((incompatible & kIncompatibleCompressionType) != 0)) {
      return fail("the compression type and its incompatible feature bit disagree");
    }
    compression_type_ = type;
  } else {
    static_assert(kV2HeaderLength <= kHeaderRead);
  }
  const std::uint64_t size = be64(h, kSize);
  // Bounded so that guest offsets never come near 2^64.
  if (size > (std::uint64_t{1} << 56)) return fail("virtual size too large");
  const std::uint64_t l2_entries = cluster_size_ / 8;
  const std::uint64_t l1_span = cluster_size_ * l2_entries;  // guest bytes one L1 entry maps
  const std::uint64_t l1_needed = (size + l1_span - 1) / l1_span;
  const std::uint64_t l1_size = be32(h, kL1Size);
  if (l1_size < l1_needed) return fail("L1 table too small for the virtual size");
  if (l1_needed * 8 > kMaxL1Bytes) return fail("L1 table too large");
  const std::uint64_t clusters = (image_size_ + cluster_size_ - 1) / cluster_size_;
  if (clusters > (std::uint64_t{64} << 20)) return fail("too many host clusters to track");
  claimed_.assign((clusters + 63) / 64, 0);
  compressed_.assign(claimed_.size(), 0);
  if (!claim(0, cluster_size_)) return;
  const std::uint64_t refcount_table = be64(h, kRefcountTableOffset);
  const std::uint64_t refcount_clusters = be32(h, kRefcountTableClusters);
  if (refcount_table == 0 || refcount_clusters == 0) return fail("no refcount table");
  if (refcount_clusters > clusters || !claim(refcount_table, refcount_clusters * cluster_size_)) {
    return fail(failure_ ? *failure_ : "refcount table past the image's end");
  }
  virtual_size_ = size;

  UniqueFd out;
  try {
    out = open_file(output_path_, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  } catch (const std::exception& error) {
    return fail(error.what());
  }
  if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) {
    ::unlink(output_path_.c_str());
    return fail("cannot size the output: " + std::string(std::strerror(errno)));
  }
  output_ = std::move(out);

  // qemu reads only the L1 entries the virtual size needs; so does this.
  if (l1_needed == 0) return;
  const std::uint64_t l1_offset = be64(h, kL1TableOffset);
  if (!claim(l1_offset, l1_needed * 8)) return;
  want(l1_offset, Target{Kind::kL1, l1_needed * 8, 0, {}});
}

void Qcow2Stream::parse_l1(std::span<const char> bytes) {
  const std::uint64_t l1_span = cluster_size_ * (cluster_size_ / 8);
  for (std::size_t i = 0; i * 8 < bytes.size() && !failed(); ++i) {
    const std::uint64_t entry = be64(bytes, i * 8);
    if (entry & kL1Reserved) return fail("an L1 entry with reserved bits set");
    const std::uint64_t l2 = entry & kOffsetMask;
    if (l2 == 0) continue;  // reads as zeros: a hole in the output
    if (!claim(l2, cluster_size_)) return;
    want(l2, Target{Kind::kL2, cluster_size_, i * l1_span, {}});
  }
}

void Qcow2Stream::parse_l2(std::uint64_t guest_start, std::span<const char> bytes) {
  const std::uint64_t size = *virtual_size_;
  for (std::size_t i = 0; i * 8 < bytes.size() && !failed(); ++i) {
    const std::uint64_t guest = guest_start + i * cluster_size_;
    if (guest >= size) break;  // past the virtual size: qemu never reads it
    const std::uint64_t entry = be64(bytes, i * 8);
    if (entry & kL2Compressed) {
      if (!decompress_) return fail("compressed clusters (not decompressed while streaming, by the caller's choice)");
      if (entry & kL2Copied) return fail("a compressed cluster with the copied flag");
      // qemu_parse_compressed_l2_entry's arithmetic: the bytes from the host
      // offset to the end of the last sector the descriptor counts.
      const unsigned shift = 62 - (cluster_bits_ - 8);
      const std::uint64_t host = entry & ((std::uint64_t{1} << shift) - 1);
      const std::uint64_t sectors = ((entry >> shift) & ((std::uint64_t{1} << (cluster_bits_ - 8)) - 1)) + 1;
      const std::uint64_t span = sectors * kCompressedSector - host % kCompressedSector;
      if (host >= image_size_) return fail("a compressed cluster past the image's end");
      // qemu reads past the end of the file as zeros; this reader takes the
      // bytes the image has, and gives up if the cluster needed more.
      const std::uint64_t length = std::min(span, image_size_ - host);
      if (!claim_compressed(host, length)) return;
      want(host, Target{Kind::kCompressed, length, guest, {}});
      continue;
    }
    if (entry & kL2Reserved) return fail("an L2 entry with reserved bits set");
    const std::uint64_t host = entry & kOffsetMask;
    if (entry & kL2Zero) {
      // Version 2 has no zero flag: qemu calls such an image corrupt.
      if (version_ < 3) return fail("a zero cluster in a version 2 image");
      if (host != 0 && !claim(host, cluster_size_)) return;
      continue;  // reads as zeros
    }
    if (host == 0) continue;  // unallocated: zeros
    if (!claim(host, cluster_size_)) return;
    want(host, Target{Kind::kData, cluster_size_, guest, {}});
  }
}

bool Qcow2Stream::claim(std::uint64_t offset, std::uint64_t length) {
  if (failed()) return false;
  if (offset & (cluster_size_ - 1)) {
    fail("an unaligned table or cluster offset");
    return false;
  }
  if (length == 0 || offset > image_size_ || length > image_size_ - offset) {
    fail("a table or cluster past the image's end");
    return false;
  }
  const std::uint64_t first = offset >> cluster_bits_;
  const std::uint64_t last = (offset + length - 1) >> cluster_bits_;
  for (std::uint64_t c = first; c <= last; ++c) {
    std::uint64_t& word = claimed_[c / 64];
    const std::uint64_t bit = std::uint64_t{1} << (c % 64);
    if ((word | compressed_[c / 64]) & bit) {
      fail("a host cluster used twice (overlapping tables or clusters)");
      return false;
    }
    word |= bit;
  }
  return true;
}

// Compressed clusters share host clusters with each other (qemu packs them),
// never with a table or an uncompressed cluster.
bool Qcow2Stream::claim_compressed(std::uint64_t offset, std::uint64_t length) {
  if (failed()) return false;
  const std::uint64_t first = offset >> cluster_bits_;
  const std::uint64_t last = (offset + length - 1) >> cluster_bits_;
  for (std::uint64_t c = first; c <= last; ++c) {
    const std::uint64_t bit = std::uint64_t{1} << (c % 64);
    if (claimed_[c / 64] & bit) {
      fail("a compressed cluster overlaps a table or an uncompressed cluster");
      return false;
    }
    compressed_[c / 64] |= bit;
  }
  return true;
}

void Qcow2Stream::want(std::uint64_t offset, Target target) {
  if (failed()) return;
  if (targets_.size() + late_.size() >= kMaxPending) return fail("too many clusters pending");
  // Two compressed clusters may name one host offset (claims keep every
  // other kind apart); only one of them could be served from the stream.
  if (targets_.contains(offset) || late_.contains(offset)) return fail("two clusters pending at one host offset");
  // Bytes already fed are read back from the complete image at finish().
  if (offset < position_) {
    late_.emplace(offset, std::move(target));
  } else {
    targets_.emplace(offset, std::move(target));
  }
}

void Qcow2Stream::decompress(std::uint64_t guest, std::span<const char> bytes) {
  // Bounded work: a cluster of output costs about its size in CPU, whatever
  // its compressed size, so the clusters decompressed (zeros included) may
  // add up to kMaxExpansion times the image at most.
  decompressed_ += cluster_size_;
  if (decompressed_ > max_decompressed_) return fail("compressed clusters expand past the bound on decompression");
  if (!pipeline_) {
    // Decompression is most of the CPU a compressed image costs: it runs on
    // every core, the download's thread only parses and writes.
    unsigned workers = std::max(1u, std::thread::hardware_concurrency());
    pipeline_ = std::make_unique<ClusterPipeline>(
        compression_type_ == kCompressionZstd ? ClusterDecompressor::Type::kZstd : ClusterDecompressor::Type::kZlib,
        cluster_bits_, workers, [this](std::uint64_t at, std::span<const char> cluster, bool ok) {
          if (!ok) return fail("a compressed cluster that is not exactly one cluster");
          write_data(at, cluster);
        });
  }
  pipeline_->submit(guest, bytes);
}

// Data goes out in the order it came, behind the compressed clusters before it.
void Qcow2Stream::emit(std::uint64_t guest, std::span<const char> bytes) {
  if (pipeline_) {
    pipeline_->pass(guest, bytes);
  } else {
    write_data(guest, bytes);
  }
}

void Qcow2Stream::write_data(std::uint64_t guest, std::span<const char> bytes) {
  const std::uint64_t size = *virtual_size_;
  if (guest >= size) return;
  bytes = bytes.first(std::min<std::uint64_t>(bytes.size(), size - guest));
  if (all_zero(bytes)) return;  // the output is sparse: zeros stay holes
  written_ += bytes.size();
  if (written_ > max_written_) return fail("more data than the room the output was given");
  if (digest_) {
    const bool aligned = guest % DataDigest::kBlock == 0 &&
                         (bytes.size() % DataDigest::kBlock == 0 || guest + bytes.size() == size);
    if (aligned && guest >= digested_) {
      digest_->add(guest, bytes);
      digested_ = guest + bytes.size();
    } else {
      digest_.reset();
    }
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t count = ::pwrite(output_.get(), bytes.data() + done, bytes.size() - done,
                             static_cast<off_t>(guest + done));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) return fail("cannot write the output: " + std::string(std::strerror(count < 0 ? errno : EIO)));
    done += static_cast<std::size_t>(count);
  }
  // Write-behind: start the writeback of every few MiB, so that the fsync
  // that makes the base durable finds little left to write.
  written_since_writeback_ += bytes.size();
  if (written_since_writeback_ >= (8u << 20)) {
    ::sync_file_range(output_.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
    written_since_writeback_ = 0;
  }
}

std::optional<std::string> Qcow2Stream::take_digest() {
  if (failed() || !digest_ || !virtual_size_) return std::nullopt;
  std::string digest = digest_->hex_digest(*virtual_size_);
  digest_.reset();
  return digest;
}

bool Qcow2Stream::finish(int image_fd) {
  if (failed()) return false;
  if (position_ != image_size_) {
    fail("the image did not arrive whole");
    return false;
  }
  if (!virtual_size_) {
    fail("no header");
    return false;
  }
  if (!targets_.empty()) {
    fail("a table or cluster past the image's end");
    return false;
  }
  // Each late range is read back whole from the complete image; a table read
  // here adds its clusters to late_ (everything has been fed).
  std::vector<char> buffer;
  while (!failed() && !late_.empty()) {
    auto it = late_.begin();
    const std::uint64_t host = it->first;
    Target target = std::move(it->second);
    late_.erase(it);
    buffer.resize(target.length);
    std::size_t done = 0;
    while (done < buffer.size()) {
      ssize_t count = ::pread(image_fd, buffer.data() + done, buffer.size() - done, static_cast<off_t>(host + done));
      if (count < 0 && errno == EINTR) continue;
      if (count <= 0) {
        fail("cannot read the image back");
        return false;
      }
      done += static_cast<std::size_t>(count);
    }
    if (target.kind == Kind::kData) {
      emit(target.guest, buffer);
    } else {
      complete(host, target, buffer);
    }
  }
  if (pipeline_ && !failed()) pipeline_->drain();
  return !failed();
}

}  // namespace kiln::image
