#include "cluster_decompressor.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <limits>

namespace kiln::image {

namespace {

// qemu's deflate window for qcow2 (block/qcow2-threads.c): 2^12, raw deflate.
constexpr int kDeflateWindowBits = -12;

}  // namespace

struct ClusterDecompressor::State {
  Type type;
  unsigned cluster_bits;
  z_stream zlib{};
  bool zlib_ready = false;
  ZSTD_DCtx* zstd = nullptr;

  ~State() {
    if (zlib_ready) inflateEnd(&zlib);
    if (zstd) ZSTD_freeDCtx(zstd);
  }

  bool inflate_cluster(std::span<const char> input, std::span<char> cluster) {
    if (input.size() > std::numeric_limits<uInt>::max() || cluster.size() > std::numeric_limits<uInt>::max()) {
      return false;
    }
    if (!zlib_ready) {
      if (inflateInit2(&zlib, kDeflateWindowBits) != Z_OK) return false;
      zlib_ready = true;
    } else if (inflateReset(&zlib) != Z_OK) {
      return false;
    }
    // zlib's API takes non-const input; it never writes to it.
    zlib.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
    zlib.avail_in = static_cast<uInt>(input.size());
    zlib.next_out = reinterpret_cast<Bytef*>(cluster.data());
    zlib.avail_out = static_cast<uInt>(cluster.size());
    // One call with Z_FINISH, as qemu: the cluster bounds the output.
    const int status = inflate(&zlib, Z_FINISH);
    return status == Z_STREAM_END && zlib.avail_out == 0;
  }

  bool zstd_cluster(std::span<const char> input, std::span<char> cluster) {
    if (!zstd) {
      zstd = ZSTD_createDCtx();
      if (!zstd) return false;
      // A frame may ask for a window up to 128 MiB by default; qemu's frames
      // hold one cluster, so a window larger than a cluster is refused.
      const int window_log = static_cast<int>(std::max(cluster_bits, 10u));
      if (ZSTD_isError(ZSTD_DCtx_setParameter(zstd, ZSTD_d_windowLogMax, window_log))) return false;
    } else if (ZSTD_isError(ZSTD_DCtx_reset(zstd, ZSTD_reset_session_only))) {
      return false;
    }
    ZSTD_outBuffer out{cluster.data(), cluster.size(), 0};
    ZSTD_inBuffer in{input.data(), input.size(), 0};
    // qemu's loop: frames until the cluster is full, each step making progress;
    // the last frame must end exactly there (0: decoded and flushed).
    std::size_t status = 0;
    while (out.pos < out.size) {
      const std::size_t in_before = in.pos;
      const std::size_t out_before = out.pos;
      status = ZSTD_decompressStream(zstd, &out, &in);
      if (ZSTD_isError(status)) return false;
      if (in.pos <= in_before && out.pos <= out_before) return false;
    }
    return status == 0;
  }
};

ClusterDecompressor::ClusterDecompressor(Type type, unsigned cluster_bits)
    : state_(std::make_unique<State>()) {
  state_->type = type;
  state_->cluster_bits = cluster_bits;
}

ClusterDecompressor::~ClusterDecompressor() = default;

bool ClusterDecompressor::decompress(std::span<const char> input, std::span<char> cluster) {
  return state_->type == Type::kZlib ? state_->inflate_cluster(input, cluster) : state_->zstd_cluster(input, cluster);
}

}  // namespace kiln::image
