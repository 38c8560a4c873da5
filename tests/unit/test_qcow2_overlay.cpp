// The native qcow2 overlay writer, judged by qemu-img, qemu-io and by the
// overlays qemu-img itself writes.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "kiln/disk/overlay.h"
#include "kiln/disk/qcow2_overlay.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

using kiln::ErrorCode;
using kiln::disk::OverlayWriter;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::uint64_t kGiB = 1ULL << 30;
constexpr std::uint64_t kTiB = 1ULL << 40;
constexpr std::uint64_t kPiB = 1ULL << 50;

// A size that is a multiple of 512 but not of the 64 KiB cluster.
constexpr std::uint64_t kUnevenSize = 10 * kGiB + 1536;

// A 64 MiB raw base whose first MiB is 0x11, the rest zeros.
fs::path make_base(const kiln::test::ScratchDir& scratch) {
  fs::path base = scratch / "base";
  kiln::run_checked({{"qemu-img", "create", "-q", "-f", "raw", base.string(), "64M"}});
  kiln::run_checked({{"qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", base.string()}});
  return base;
}

json qemu_img_info(const fs::path& image) {
  return json::parse(
      kiln::run_checked({{"qemu-img", "info", "--output=json", "-f", "qcow2", image.string()}}));
}

// Requires `qemu-img check` to find no corruption, no leak and no error.
void require_clean(const fs::path& image) {
  auto result = kiln::run({{"qemu-img", "check", "--output=json", "-f", "qcow2", image.string()}});
  INFO(image.string() << ": " << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  json report = json::parse(result.out);
  REQUIRE(report.value("corruptions", 0) == 0);
  REQUIRE(report.value("leaks", 0) == 0);
  REQUIRE(report.value("check-errors", 0) == 0);
}

// Runs qemu-io commands on a qcow2 image; true when every one succeeded
// (qemu-io exits 0 even when a read does not match, but says so).
bool qemu_io(const fs::path& image, const std::vector<std::string>& commands) {
  std::vector<std::string> argv{"qemu-io", "-f", "qcow2"};
  for (const auto& command : commands) {
    argv.push_back("-c");
    argv.push_back(command);
  }
  argv.push_back(image.string());
  auto result = kiln::run({argv});
  INFO(result.out << result.err);
  return result.exit_code == 0 &&
         result.out.find("Pattern verification failed") == std::string::npos && result.err.empty();
}

// Big-endian integers and text at byte offsets of a qcow2 file.
class BigEndianReader {
 public:
  explicit BigEndianReader(std::string bytes) : bytes_(std::move(bytes)) {}
  std::uint64_t u8(std::size_t offset) const { return read(offset, 1); }
  std::uint64_t u16(std::size_t offset) const { return read(offset, 2); }
  std::uint64_t u32(std::size_t offset) const { return read(offset, 4); }
  std::uint64_t u64(std::size_t offset) const { return read(offset, 8); }
  std::string text(std::size_t offset, std::size_t length) const {
    return bytes_.substr(offset, length);
  }

 private:
  std::uint64_t read(std::size_t offset, std::size_t width) const {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i) {
      value = value << 8 | static_cast<unsigned char>(bytes_.at(offset + i));
    }
    return value;
  }
  std::string bytes_;
};

}  // namespace

TEST_CASE(
    "a native overlay passes qemu-img check and shows its backing file, raw format and size") {
  std::uint64_t size = GENERATE(1 * kGiB, 20 * kGiB, 1 * kTiB, 16 * kTiB, kUnevenSize, 2 * kPiB);
  INFO("size " << size);
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  kiln::disk::write_qcow2_overlay(scratch / "disk", base, size);

  require_clean(scratch / "disk");
  json info = qemu_img_info(scratch / "disk");
  REQUIRE(info["format"] == "qcow2");
  REQUIRE(info["virtual-size"] == size);
  REQUIRE(info["backing-filename"] == base.string());
  REQUIRE(info["backing-filename-format"] == "raw");
  REQUIRE(info["cluster-size"] == 65536);
  REQUIRE(info["format-specific"]["data"]["compat"] == "1.1");
  REQUIRE(info["format-specific"]["data"]["refcount-bits"] == 16);
  REQUIRE(info["dirty-flag"] == false);
  REQUIRE(kiln::file_size(scratch / "disk") == kiln::disk::qcow2_overlay_layout(size).file_size);
}

// Debian 12 ships qemu-img 7.2. A later qemu may write more feature names;
// if this fails after an upgrade, compare the feature name tables first.
TEST_CASE("a native overlay is byte for byte what qemu-img 7.2 writes") {
  std::uint64_t size = GENERATE(1 * kGiB, 20 * kGiB, 16 * kTiB, kUnevenSize, 1000);
  INFO("size " << size);
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  kiln::disk::create_overlay(scratch / "native", base, size, OverlayWriter::kNative);
  kiln::disk::create_overlay(scratch / "qemu-img", base, size, OverlayWriter::kQemuImg);
  REQUIRE(kiln::read_file(scratch / "native") == kiln::read_file(scratch / "qemu-img"));
}

TEST_CASE("native and qemu-img overlays look alike to qemu-img info, check and compare") {
  std::uint64_t size = GENERATE(1 * kGiB, 20 * kGiB, 1 * kTiB, 16 * kTiB, kUnevenSize);
  INFO("size " << size);
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  kiln::disk::create_overlay(scratch / "native", base, size, OverlayWriter::kNative);
  kiln::disk::create_overlay(scratch / "qemu-img", base, size, OverlayWriter::kQemuImg);

  require_clean(scratch / "native");
  require_clean(scratch / "qemu-img");
  json native = qemu_img_info(scratch / "native");
  json reference = qemu_img_info(scratch / "qemu-img");
  for (const char* field : {"format", "virtual-size", "backing-filename", "backing-filename-format",
                            "cluster-size", "dirty-flag"}) {
    INFO(field);
    REQUIRE(native[field] == reference[field]);
  }
  REQUIRE(native["format-specific"]["data"] == reference["format-specific"]["data"]);
  // -s: strict, so a difference in size or allocation counts too.
  auto compare = kiln::run({{"qemu-img", "compare", "-s", "-f", "qcow2", "-F", "qcow2",
                             (scratch / "native").string(), (scratch / "qemu-img").string()}});
  INFO(compare.out << compare.err);
  REQUIRE(compare.exit_code == 0);
}

TEST_CASE("each header field of a native overlay agrees with qemu-img's view of it") {
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  const std::uint64_t size = 16 * kTiB;
  kiln::disk::write_qcow2_overlay(scratch / "disk", base, size);
  json info = qemu_img_info(scratch / "disk");
  json specific = info["format-specific"]["data"];
  BigEndianReader header(kiln::read_file(scratch / "disk").substr(0, 65536));
  std::uint64_t cluster_size = info["cluster-size"];

  // Byte positions from qcow2.txt "Header", written out here on purpose:
  // the test does not trust the writer's own constants.

  // magic, version.
  REQUIRE(header.text(0, 4) == "QFI\xfb");
  REQUIRE(header.u32(4) == 3);
  REQUIRE(specific["compat"] == "1.1");

  // backing_file_offset, backing_file_size: the name, inside the first cluster.
  std::uint64_t backing_offset = header.u64(8);
  std::uint64_t backing_size = header.u32(16);
  REQUIRE(header.text(backing_offset, backing_size) == info["backing-filename"]);
  REQUIRE(backing_offset + backing_size <= cluster_size);

  // cluster_bits, size, crypt_method.
  REQUIRE(std::uint64_t{1} << header.u32(20) == cluster_size);
  REQUIRE(header.u64(24) == info["virtual-size"]);
  REQUIRE(header.u32(32) == 0);
  REQUIRE_FALSE(info.contains("encrypted"));

  // l1_size, l1_table_offset: 32768 entries, aligned, ending the file.
  std::uint64_t l1_entries = header.u32(36);
  std::uint64_t l1_offset = header.u64(40);
  REQUIRE(l1_entries == size / (cluster_size * cluster_size / 8));
  REQUIRE(l1_offset % cluster_size == 0);
  REQUIRE(l1_offset + l1_entries * 8 == kiln::file_size(scratch / "disk"));

  // refcount_table_offset, refcount_table_clusters.
  std::uint64_t refcount_table_offset = header.u64(48);
  REQUIRE(refcount_table_offset % cluster_size == 0);
  REQUIRE(header.u32(56) == 1);

  // nb_snapshots, snapshots_offset.
  REQUIRE(header.u32(60) == 0);
  REQUIRE(header.u64(64) == 0);
  REQUIRE_FALSE(info.contains("snapshots"));

  // Incompatible, compatible and autoclear features.
  REQUIRE(header.u64(72) == 0);
  REQUIRE(specific["corrupt"] == false);
  REQUIRE(specific["extended-l2"] == false);
  REQUIRE(info["dirty-flag"] == false);
  REQUIRE(header.u64(80) == 0);
  REQUIRE(specific["lazy-refcounts"] == false);
  REQUIRE(header.u64(88) == 0);

  // refcount_order, header_length, compression_type.
  REQUIRE(std::uint64_t{1} << header.u32(96) == specific["refcount-bits"]);
  REQUIRE(header.u32(100) == 112);
  REQUIRE(header.u8(104) == 0);
  REQUIRE(specific["compression-type"] == "zlib");

  // Extensions: backing format, feature name table, end marker; then the name.
  REQUIRE(header.u32(112) == 0xe2792aca);
  REQUIRE(header.u32(116) == 3);
  REQUIRE(header.text(120, 3) == info["backing-filename-format"]);
  REQUIRE(header.u32(128) == 0x6803f857);
  REQUIRE(header.u32(132) == 8 * 48);
  REQUIRE(header.u8(136) == 0);  // the first entry: incompatible feature, bit 0
  REQUIRE(header.u8(137) == 0);
  REQUIRE(header.text(138, 9) == "dirty bit");
  REQUIRE(header.u32(136 + 8 * 48) == 0);
  REQUIRE(backing_offset == 136 + 8 * 48 + 8);

  // One refcount block, counting exactly the 7 clusters in use: header,
  // refcount table, refcount block and 4 of L1.
  BigEndianReader file(kiln::read_file(scratch / "disk"));
  std::uint64_t block = file.u64(refcount_table_offset);
  REQUIRE(file.u64(refcount_table_offset + 8) == 0);
  for (std::uint64_t cluster = 0; cluster < 8; ++cluster) {
    REQUIRE(file.u16(block + 2 * cluster) == (cluster < 7 ? 1 : 0));
  }
}

TEST_CASE("the layout of an overlay gives one L1 entry per 512 MiB and counts every cluster") {
  auto twenty = kiln::disk::qcow2_overlay_layout(20 * kGiB);
  REQUIRE(twenty.l1_entries == 40);
  REQUIRE(twenty.l1_table_clusters == 1);
  REQUIRE(twenty.clusters_in_use == 4);
  REQUIRE(twenty.file_size == 196928);  // what qemu-img 7.2 writes for 20G

  auto largest_tested = kiln::disk::qcow2_overlay_layout(16 * kTiB);
  REQUIRE(largest_tested.l1_entries == 32768);
  REQUIRE(largest_tested.l1_table_clusters == 4);
  REQUIRE(largest_tested.clusters_in_use == 7);

  auto largest = kiln::disk::qcow2_overlay_layout(kiln::disk::kMaxOverlayVirtualSize);
  REQUIRE(largest.l1_entries == 4 * 1024 * 1024);
  REQUIRE(largest.l1_table_clusters == 512);
  REQUIRE(largest.clusters_in_use == 515);

  REQUIRE(kiln::disk::qcow2_overlay_layout(1).l1_entries == 1);
  REQUIRE(kiln::disk::qcow2_overlay_layout(512 * kMiB + 512).l1_entries == 2);
}

TEST_CASE("a size that is not a multiple of 512 is rounded up as qemu-img rounds it") {
  REQUIRE(kiln::disk::overlay_virtual_size(1) == 512);
  REQUIRE(kiln::disk::overlay_virtual_size(512) == 512);
  REQUIRE(kiln::disk::overlay_virtual_size(1000) == 1024);
  REQUIRE(kiln::disk::overlay_virtual_size(kGiB + 1) == kGiB + 512);

  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  auto writer = GENERATE(OverlayWriter::kNative, OverlayWriter::kQemuImg);
  kiln::disk::create_overlay(scratch / "disk", base, kGiB + 1, writer);
  REQUIRE(qemu_img_info(scratch / "disk")["virtual-size"] == kGiB + 512);
  require_clean(scratch / "disk");
}

TEST_CASE("a guest writing to a native overlay keeps it clean and reads back what it wrote") {
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  fs::path disk = scratch / "disk";
  kiln::disk::write_qcow2_overlay(disk, base, 20 * kGiB);

  REQUIRE(qemu_io(disk, {"write -P 0xab 0 64k", "write -P 0xcd 1G 64k"}));
  require_clean(disk);
  REQUIRE(qemu_io(disk, {"read -P 0xab 0 64k", "read -P 0xcd 1G 64k",
                         "read -P 0x11 64k 64k",         // from the base
                         "read -P 0 2G 64k"}));          // past the base's end: zeros
  REQUIRE_FALSE(qemu_io(disk, {"read -P 0x11 0 64k"}));  // a mismatch is noticed
  // The base is untouched.
  auto base_read = kiln::run({{"qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", base.string()}});
  REQUIRE(base_read.out.find("Pattern verification failed") == std::string::npos);
}

TEST_CASE("a guest can write the last cluster of a 16 TiB native overlay") {
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  fs::path disk = scratch / "disk";
  kiln::disk::write_qcow2_overlay(disk, base, 16 * kTiB);
  std::string last = std::to_string(16 * kTiB - 64 * 1024);
  REQUIRE(qemu_io(disk, {"write -P 0xab 0 64k", "write -P 0xcd " + last + " 64k"}));
  require_clean(disk);
  REQUIRE(qemu_io(disk, {"read -P 0xab 0 64k", "read -P 0xcd " + last + " 64k"}));
}

TEST_CASE("both overlay writers refuse the same bad requests before any file exists") {
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  auto writer = GENERATE(OverlayWriter::kNative, OverlayWriter::kQemuImg);
  fs::path disk = scratch / "disk";
  std::string before = kiln::test::tree_listing(scratch.path());
  using kiln::disk::create_overlay;

  REQUIRE_KILN_ERROR_MENTIONS(create_overlay(disk, "relative/base", kGiB, writer),
                              ErrorCode::kInvalidArgument, "not absolute");
  fs::path long_name = "/" + std::string(kiln::disk::kMaxBackingFileNameBytes, 'b');
  REQUIRE_KILN_ERROR_MENTIONS(create_overlay(disk, long_name, kGiB, writer),
                              ErrorCode::kInvalidArgument, "1024 bytes long");
  REQUIRE_KILN_ERROR(create_overlay(disk, base, 0, writer), ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR_MENTIONS(
      create_overlay(disk, base, kiln::disk::kMaxOverlayVirtualSize + 1, writer),
      ErrorCode::kInvalidArgument, "2 PiB");
  REQUIRE_KILN_ERROR_MENTIONS(create_overlay(disk, scratch / "missing", kGiB, writer),
                              ErrorCode::kNotFound, "does not exist");
  REQUIRE_KILN_ERROR(create_overlay(disk, scratch.path(), kGiB, writer),
                     ErrorCode::kInvalidArgument);
  REQUIRE(kiln::test::tree_listing(scratch.path()) == before);

  // Never over an existing file, which stays as it was.
  kiln::test::write_text(disk, "precious");
  REQUIRE_KILN_ERROR(create_overlay(disk, base, kGiB, writer), ErrorCode::kIoError);
  REQUIRE(kiln::read_file(disk) == "precious");
}

TEST_CASE("the largest overlay qemu accepts is the largest kiln writes") {
  kiln::test::ScratchDir scratch;
  fs::path base = make_base(scratch);
  // qemu-img agrees on the limit: one sector more is too large for it too.
  auto beyond = kiln::run(
      {{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.string(),
        (scratch / "beyond").string(), std::to_string(kiln::disk::kMaxOverlayVirtualSize + 512)}});
  REQUIRE(beyond.exit_code != 0);
  REQUIRE(beyond.err.find("too large") != std::string::npos);
}
