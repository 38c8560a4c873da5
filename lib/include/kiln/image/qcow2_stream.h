// Converts a qcow2 image to raw while it downloads: fed the image's bytes in
// order, it writes each data cluster at its guest offset into a raw file as
// the bytes arrive, so that at the end of the download the conversion is
// done. It handles the common case only: qcow2 version 2 or 3, no backing
// file, no external data file, no encryption, no extended L2 entries, no
// internal snapshots, no dirty or corrupt bit; clusters plain, zero or
// compressed (deflate, or zstd when the header says so: cloud images are
// usually compressed qcow2). On anything else, and on any doubt (a table or
// cluster that overlaps another, a cluster mapped twice, an entry with
// reserved bits set, a cluster past the download's end, a compressed cluster
// that does not decompress to exactly one cluster, a table bigger than the
// bounds below) it gives up: failed() is true, why() says why, the output is
// removed, and the caller runs qemu-img convert as before. It never throws
// (but std::bad_alloc).
//
// What it promises, and what it does not: its output is byte-equal to
// `qemu-img convert -O raw` of the same bytes when it succeeds (tested
// differentially, tests/unit/test_qcow2_stream.cpp and
// tests/fuzz/fuzz_qcow2_stream.cpp). It is NOT a check: the caller still
// verifies Glance's digest, runs the native inspector and qemu-img's second
// opinion on the complete download, and compares the virtual size they agreed
// on with this reader's, before it uses the output; nothing it wrote is
// published before then. It reads no refcount block (qemu-img convert does
// not either).
//
// Why it runs in kiln's process, not in a sandboxed child like qemu-img
// (lib/util/sandbox.cpp): it is ~400 lines that read fixed-layout big-endian
// integers; every field is range-checked before use and all arithmetic on
// offsets is bounded (offsets < 2^56, sizes bounded below), so no read or
// write goes outside a buffer it sized itself; the tables it holds are bounded
// (L1 <= 4 MiB, one L2 table = one cluster <= 2 MiB, a compressed cluster's
// bytes <= 4 MiB, pending clusters <= kMaxPending, clusters being
// decompressed about 8 MiB), which keeps its memory within a few tens of MiB; it writes only into its own output file, at guest offsets
// below the image's virtual size, each guest cluster once, and at most
// `max_written_bytes` of data; decompression (zlib and libzstd, as qemu uses
// them, through ClusterDecompressor: never more than one cluster of output,
// zstd's window bounded to a cluster; on one worker thread per core, the
// clusters written in the order they arrived, lib/image/cluster_pipeline.h) adds up to at most kMaxExpansion times
// the download's size. It opens no file named by the image and runs no code.
// libFuzzer runs it under ASan and UBSan with qemu-img as the judge
// (tools/fuzz-qcow2-stream, a CTest). The
// wall behind it is the one behind every image: Glance's digest, the
// inspector and qemu-img's second opinion on the whole file, all before
// publication; a hostile image that fools this reader gets at worst a wrong
// raw file that is thrown away when those checks refuse the image, or, if they
// pass, a raw file with the content the image's own tables describe.
//
// Not thread-safe: one feeder (decompression workers are its own).
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/util/data_digest.h"
#include "kiln/util/fs.h"

namespace kiln::image {

class ClusterPipeline;  // lib/image/cluster_pipeline.h

class Qcow2Stream {
 public:
  static constexpr std::uint64_t kMaxL1Bytes = 4u << 20;
  static constexpr std::size_t kMaxPending = 1u << 17;  // ~10 MiB of bookkeeping at most
  // Compressed clusters may decompress to this many times the download's size
  // in all (zero clusters included), which bounds the CPU a hostile image can
  // ask for; real images compress 2-5x.
  static constexpr std::uint64_t kMaxExpansion = 64;

  // `output` is created (O_EXCL) on the first header that passes; `image_size`
  // is the download's size (Glance's), which bounds every host offset;
  // `max_written_bytes` bounds the data written (zeros stay holes and do not
  // count): the room the caller set aside for the output. With
  // `decompress` false it gives up at the first compressed cluster instead
  // (qemu-img then converts it after the download).
  Qcow2Stream(std::filesystem::path output, std::uint64_t image_size,
              std::uint64_t max_written_bytes = std::numeric_limits<std::uint64_t>::max(), bool decompress = true);
  ~Qcow2Stream();
  Qcow2Stream(const Qcow2Stream&) = delete;
  Qcow2Stream& operator=(const Qcow2Stream&) = delete;

  // The next bytes of the image, in order.
  void feed(std::span<const char> data);

  // Call once the whole image is in `image_fd` (the .part, complete): copies
  // the clusters whose table came after their data, checks that nothing is
  // missing. Returns true when the output is complete; false (and failed())
  // otherwise.
  bool finish(int image_fd);

  bool failed() const { return failure_.has_value(); }
  const std::string& why() const;
  // The image's virtual size, once its header has passed.
  std::optional<std::uint64_t> virtual_size() const { return virtual_size_; }
  // The output's DataDigest (kiln/util/data_digest.h), when every data block
  // was written in guest order and block-aligned (as in an image qemu-img
  // convert made), so that the output need not be read again; else nothing,
  // and the caller digests the file. REQUIRES: finish() returned true; once.
  std::optional<std::string> take_digest();
  // The output's descriptor (open for writing) once created; its owner is this object.
  int output_fd() const { return output_.get(); }

 private:
  enum class Kind { kHeader, kL1, kL2, kData, kCompressed };
  struct Target {
    Kind kind;
    std::uint64_t length;
    std::uint64_t guest;         // kData, kCompressed: its guest offset; kL2: the guest offset it starts at
    std::vector<char> bytes;     // metadata or compressed bytes being assembled
    std::uint64_t filled = 0;    // bytes served so far
  };

  void fail(std::string why);
  void process(std::uint64_t offset, std::span<const char> data);
  void complete(std::uint64_t offset, Target& target, std::span<const char> bytes);
  void parse_header(std::span<const char> bytes);
  void parse_l1(std::span<const char> bytes);
  void parse_l2(std::uint64_t guest_start, std::span<const char> bytes);
  // Claims the host clusters [offset, offset + length) (none may be claimed twice).
  bool claim(std::uint64_t offset, std::uint64_t length);
  // Claims the host clusters a compressed cluster's bytes touch (shared only
  // with other compressed clusters).
  bool claim_compressed(std::uint64_t offset, std::uint64_t length);
  void want(std::uint64_t offset, Target target);
  void write_data(std::uint64_t guest, std::span<const char> bytes);
  void decompress(std::uint64_t guest, std::span<const char> bytes);
  void emit(std::uint64_t guest, std::span<const char> bytes);

  std::filesystem::path output_path_;
  std::uint64_t image_size_;
  std::uint64_t max_written_;
  bool decompress_;
  std::uint64_t max_decompressed_ = 0;
  UniqueFd output_;
  std::optional<std::string> failure_;
  std::optional<std::uint64_t> virtual_size_;
  unsigned version_ = 0;
  unsigned cluster_bits_ = 0;
  unsigned compression_type_ = 0;  // 0 deflate, 1 zstd
  std::uint64_t cluster_size_ = 0;
  std::uint64_t position_ = 0;  // bytes fed so far
  std::uint64_t written_since_writeback_ = 0;
  std::map<std::uint64_t, Target> targets_;  // by host offset, each at or past position_
  std::map<std::uint64_t, Target> late_;     // host offset already passed: read back at finish()
  std::vector<std::uint64_t> claimed_;       // bitmap of host clusters in use
  std::vector<std::uint64_t> compressed_;    // bitmap of host clusters holding compressed clusters
  std::unique_ptr<ClusterPipeline> pipeline_;  // made for the first compressed cluster
  std::uint64_t decompressed_ = 0;
  std::uint64_t written_ = 0;
  std::optional<DataDigest> digest_ = DataDigest();  // gone once a write comes out of order
  std::uint64_t digested_ = 0;                       // the digest covers [0, digested_)
};

}  // namespace kiln::image
