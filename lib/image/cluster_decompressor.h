// Decompresses one compressed qcow2 cluster as qemu 7.2 does
// (block/qcow2-threads.c): raw deflate with a 4 KiB window (zlib's
// inflateInit2 with -12), or zstd when the image's compression type is 1.
// What it accepts is a subset of what qemu accepts: bytes that decompress to
// exactly one cluster (deflate: the stream ends where the cluster does, where
// qemu would also take a longer stream's first cluster; zstd: whole frames
// that end exactly at the cluster's end, qemu's own rule); on anything else
// it says no and the caller gives up (qemu-img then converts the image). It never writes past the cluster it is given, and
// its own memory is bounded (zstd's window to the cluster size, a larger one
// is refused; deflate's window is 4 KiB).
//
// Private to lib/image (Qcow2Stream). Not thread-safe: one per stream.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

namespace kiln::image {

class ClusterDecompressor {
 public:
  enum class Type { kZlib, kZstd };

  // REQUIRES: 9 <= cluster_bits <= 21.
  ClusterDecompressor(Type type, unsigned cluster_bits);
  ~ClusterDecompressor();
  ClusterDecompressor(const ClusterDecompressor&) = delete;
  ClusterDecompressor& operator=(const ClusterDecompressor&) = delete;

  // Decompresses `input` into `cluster` (one cluster). True when qemu would
  // read the same cluster from it; false (and `cluster` unspecified) when it
  // does not decompress to exactly one cluster, or cannot allocate.
  bool decompress(std::span<const char> input, std::span<char> cluster);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kiln::image
