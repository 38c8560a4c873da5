// The streaming qcow2 -> raw converter, judged by qemu-img: images made here
// by qemu-img create/convert (-c: zlib and zstd) and qemu-io, fed in chunks of several sizes, must
// come out byte-equal to `qemu-img convert -O raw`; every kind it does not
// handle must make it give up (the fetch then runs qemu-img), leaving no output.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/image/qcow2_stream.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace fs = std::filesystem;

namespace {

void run(std::vector<std::string> argv) { kiln::run_checked({std::move(argv)}); }

std::vector<char> slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Streamed {
  bool ok = false;
  std::string why;
  bool output_left = false;
  std::optional<std::string> digest;  // the one computed while writing, if any
};

// Feeds `image` to a Qcow2Stream in chunks of `chunk` bytes, as a download would.
Streamed stream(const fs::path& image, const fs::path& output, std::size_t chunk) {
  std::vector<char> bytes = slurp(image);
  kiln::image::Qcow2Stream converter(output, bytes.size());
  for (std::size_t at = 0; at < bytes.size(); at += chunk) {
    converter.feed(std::span<const char>(bytes.data() + at, std::min(chunk, bytes.size() - at)));
  }
  kiln::UniqueFd fd = kiln::open_file(image, O_RDONLY);
  Streamed result;
  result.ok = converter.finish(fd.get());
  result.why = converter.why();
  if (result.ok) result.digest = converter.take_digest();
  result.output_left = fs::exists(output);
  return result;
}

// The streamed output of `image` equals qemu-img's, for every chunk size.
void require_same_as_qemu(const kiln::test::ScratchDir& scratch, const fs::path& image) {
  fs::path reference = scratch / "reference.raw";
  fs::remove(reference);
  run({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image.string(), reference.string()});
  std::vector<char> expected = slurp(reference);
  for (std::size_t chunk : {std::size_t{1} << 20, std::size_t{7919}, std::size_t{65536 + 512}}) {
    INFO("image " << image.filename() << ", chunks of " << chunk);
    fs::path output = scratch / "streamed.raw";
    fs::remove(output);
    Streamed result = stream(image, output, chunk);
    INFO("gave up: " << result.why);
    REQUIRE(result.ok);
    REQUIRE(fs::file_size(output) == expected.size());
    REQUIRE((slurp(output) == expected));
    // A digest computed while writing is the file's.
    if (result.digest) REQUIRE(*result.digest == kiln::data_digest_of_file(output));
  }
}

void require_gives_up(const kiln::test::ScratchDir& scratch, const fs::path& image, const std::string& reason) {
  fs::path output = scratch / "streamed.raw";
  fs::remove(output);
  Streamed result = stream(image, output, 1 << 20);
  INFO("image " << image.filename());
  REQUIRE_FALSE(result.ok);
  REQUIRE(result.why.find(reason) != std::string::npos);
  REQUIRE_FALSE(result.output_left);
}

// A raw file of `size` bytes with random data at scattered offsets.
fs::path scattered_raw(const kiln::test::ScratchDir& scratch, const std::string& size) {
  fs::path raw = scratch / "source.raw";
  run({"truncate", "-s", size, raw.string()});
  for (const char* seek : {"0", "3", "17", "40"}) {
    run({"dd", "if=/dev/urandom", "of=" + raw.string(), "bs=64K", "count=5", "seek=" + std::string(seek),
         "conv=notrunc", "status=none"});
  }
  return raw;
}

}  // namespace

TEST_CASE("a qcow2 made by qemu-img convert streams to what qemu-img convert makes of it, for every cluster size") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scattered_raw(scratch, "5000000");  // not a multiple of any cluster size
  for (const char* cluster : {"512", "4096", "65536", "2M"}) {
    fs::path image = scratch / (std::string("c") + cluster + ".qcow2");
    run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", std::string("cluster_size=") + cluster,
         raw.string(), image.string()});
    require_same_as_qemu(scratch, image);
  }
  // qemu-img convert writes in guest order: the digest comes with the output.
  fs::path image = scratch / "c65536.qcow2";
  Streamed result = stream(image, scratch / "digested.raw", 1 << 20);
  REQUIRE(result.ok);
  REQUIRE(result.digest);
  REQUIRE(*result.digest == kiln::data_digest_of_file(scratch / "digested.raw"));
}

TEST_CASE("a qcow2 written by qemu-io after qemu-img create streams right, L2 tables between the data") {
  kiln::test::ScratchDir scratch;
  for (const char* cluster : {"512", "65536"}) {
    fs::path image = scratch / (std::string("io") + cluster + ".qcow2");
    run({"qemu-img", "create", "-q", "-f", "qcow2", "-o", std::string("cluster_size=") + cluster, image.string(),
         "8M"});
    // Out of guest order, so that tables and data interleave in the file;
    // a zero-flag cluster (write -z) and a discarded one too.
    run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 6M 100k", "-c", "write -P 0x22 0 64k", "-c",
         "write -P 0x33 3M 4k", "-c", "write -P 0x44 7936k 256k", "-c", "write -z 6M 64k", "-c",
         "write -P 0x55 1M 1536", "-c", "discard 3M 4k", image.string()});
    require_same_as_qemu(scratch, image);
  }
}

TEST_CASE("a qcow2 streams right with either refcount order and as version 2") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scattered_raw(scratch, "4M");
  for (const char* options : {"refcount_bits=1", "refcount_bits=64", "compat=0.10", "compat=1.1,lazy_refcounts=on"}) {
    fs::path image = scratch / "options.qcow2";
    fs::remove(image);
    run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", options, raw.string(), image.string()});
    INFO(options);
    require_same_as_qemu(scratch, image);
  }
}

TEST_CASE("a fully allocated qcow2 and an empty one stream right") {
  kiln::test::ScratchDir scratch;
  fs::path full = scratch / "full.qcow2";
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", full.string(), "3M"});
  run({"qemu-io", "-f", "qcow2", "-c", "write -P 0x7e 0 3M", full.string()});
  require_same_as_qemu(scratch, full);
  fs::path empty = scratch / "empty.qcow2";
  // All holes; 256 MiB (not more) because the test compares whole files in memory.
  run({"qemu-img", "create", "-q", "-f", "qcow2", empty.string(), "256M"});
  require_same_as_qemu(scratch, empty);
}

TEST_CASE("a cluster whose L2 table comes after it in the file is read back at the end") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scattered_raw(scratch, "4M");
  fs::path image = scratch / "moved-l2.qcow2";
  run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(), image.string()});
  // Moves the (only) L2 table to a new cluster at the end of the file and
  // points the L1 entry at it: every data cluster now precedes its table.
  // qemu-img reads the image so (it does not read refcounts to convert).
  std::vector<char> bytes = slurp(image);
  auto be64 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    return v;
  };
  const std::uint64_t l1 = be64(40);
  const std::uint64_t l2 = be64(l1) & 0x00fffffffffffe00ull;
  const std::uint64_t moved = (bytes.size() + 65535) / 65536 * 65536;
  bytes.resize(moved + 65536);
  std::copy_n(bytes.begin() + static_cast<std::ptrdiff_t>(l2), 65536, bytes.begin() + static_cast<std::ptrdiff_t>(moved));
  std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(l2), 65536, 0);
  const std::uint64_t entry = moved | (1ull << 63);
  for (int i = 0; i < 8; ++i) bytes[l1 + i] = static_cast<char>(entry >> (56 - 8 * i));
  std::ofstream(image, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  require_same_as_qemu(scratch, image);
}

TEST_CASE("the streaming converter gives up on what it does not handle, leaving no output") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scattered_raw(scratch, "4M");
  fs::path base = scratch / "base.qcow2";
  run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(), base.string()});

  fs::path backed = scratch / "backed.qcow2";
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-b", base.string(), "-F", "qcow2", backed.string()});
  require_gives_up(scratch, backed, "backing file");

  fs::path external = scratch / "external.qcow2";
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + (scratch / "external.data").string(),
       external.string(), "4M"});
  require_gives_up(scratch, external, "incompatible features");

  fs::path extended = scratch / "extended.qcow2";
  run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "extended_l2=on", raw.string(), extended.string()});
  require_gives_up(scratch, extended, "incompatible features");

  fs::path encrypted = scratch / "encrypted.qcow2";
  run({"qemu-img", "create", "-q", "--object", "secret,id=sec0,data=abc", "-f", "qcow2", "-o",
       "encrypt.format=luks,encrypt.key-secret=sec0", encrypted.string(), "4M"});
  require_gives_up(scratch, encrypted, "encryption");

  fs::path snapshot = scratch / "snapshot.qcow2";
  fs::copy_file(base, snapshot);
  run({"qemu-img", "snapshot", "-c", "one", snapshot.string()});
  require_gives_up(scratch, snapshot, "internal snapshots");

  fs::path not_qcow2 = scratch / "source.raw";
  require_gives_up(scratch, not_qcow2, "not a qcow2 image");
}

TEST_CASE("the streaming converter gives up on overlapping clusters and a cut-short image") {
  kiln::test::ScratchDir scratch;
  fs::path raw = scattered_raw(scratch, "4M");
  fs::path image = scratch / "image.qcow2";
  run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(), image.string()});
  std::vector<char> bytes = slurp(image);
  auto be64 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    return v;
  };
  const std::uint64_t l2 = be64(be64(40)) & 0x00fffffffffffe00ull;
  // The second guest cluster mapped onto the first one's host cluster.
  std::vector<char> twice = bytes;
  std::copy_n(bytes.begin() + static_cast<std::ptrdiff_t>(l2), 8, twice.begin() + static_cast<std::ptrdiff_t>(l2 + 8));
  fs::path mapped_twice = scratch / "twice.qcow2";
  std::ofstream(mapped_twice, std::ios::binary).write(twice.data(), static_cast<std::streamsize>(twice.size()));
  require_gives_up(scratch, mapped_twice, "used twice");
  // A data cluster on the L2 table itself.
  std::vector<char> onto = bytes;
  const std::uint64_t entry = l2 | (1ull << 63);
  for (int i = 0; i < 8; ++i) onto[l2 + i] = static_cast<char>(entry >> (56 - 8 * i));
  fs::path onto_table = scratch / "onto.qcow2";
  std::ofstream(onto_table, std::ios::binary).write(onto.data(), static_cast<std::streamsize>(onto.size()));
  require_gives_up(scratch, onto_table, "used twice");
  // Cut short: the last data cluster past the end.
  fs::path cut = scratch / "cut.qcow2";
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 65536));
  require_gives_up(scratch, cut, "past the image's end");
}

TEST_CASE("every hostile qcow2 of tests/hostile/make-images makes the streaming converter give up") {
  // The fetch refuses them all anyway (inspector, qemu-img's second opinion);
  // this says the stream never even offers an output for one, and survives each.
  kiln::test::ScratchDir scratch;
  fs::path directory = scratch / "hostile";
  run({KILN_SOURCE_DIR "/tests/hostile/make-images", directory.string()});
  nlohmann::json manifest = nlohmann::json::parse(slurp(directory / "manifest.json"));
  int streamed = 0;
  for (const auto& entry : manifest.at("images")) {
    if (entry.at("qemu_format") != "qcow2") continue;
    fs::path image = directory / entry.at("file").get<std::string>();
    fs::path output = scratch / "streamed.raw";
    fs::remove(output);
    Streamed result = stream(image, output, 4096 + 7);
    INFO(image.filename() << ": " << entry.at("description").get<std::string>());
    REQUIRE_FALSE(result.ok);
    REQUIRE_FALSE(result.output_left);
    ++streamed;
  }
  REQUIRE(streamed > 0);
}

TEST_CASE("a compressed qcow2 streams to what qemu-img convert makes of it, zlib and zstd, for every cluster size") {
  kiln::test::ScratchDir scratch;
  // Text compresses, random data does not (qemu-img then stores the cluster
  // plain): the image mixes compressed, plain and unallocated clusters.
  fs::path raw = scattered_raw(scratch, "5000000");
  run({"sh", "-c", "yes kiln stream | head -c 1500000 | dd of=" + raw.string() + " bs=4096 seek=300 conv=notrunc status=none"});
  for (const char* type : {"zlib", "zstd"}) {
    for (const char* cluster : {"512", "4096", "65536", "2M"}) {
      fs::path image = scratch / (std::string(type) + "-c" + cluster + ".qcow2");
      run({"qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
           std::string("compression_type=") + type + ",cluster_size=" + cluster, raw.string(), image.string()});
      require_same_as_qemu(scratch, image);
    }
  }
  // Version 2 knows only zlib.
  fs::path v2 = scratch / "v2.qcow2";
  run({"qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", raw.string(), v2.string()});
  require_same_as_qemu(scratch, v2);
  // qemu-img convert -c writes in guest order: the digest comes with the output.
  Streamed result = stream(scratch / "zstd-c65536.qcow2", scratch / "digested.raw", 1 << 20);
  REQUIRE(result.ok);
  REQUIRE(result.digest);
  REQUIRE(*result.digest == kiln::data_digest_of_file(scratch / "digested.raw"));
}

TEST_CASE("a compressed cluster written by qemu-io among plain ones streams right") {
  kiln::test::ScratchDir scratch;
  fs::path image = scratch / "mixed.qcow2";
  run({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image.string(), "4M"});
  // Compressed writes (-c) out of guest order, between plain ones.
  run({"qemu-io", "-f", "qcow2", "-c", "write -c -P 0x61 2M 64k", "-c", "write -P 0x62 0 8k", "-c",
       "write -c -P 0x63 1M 4k", "-c", "write -c -P 0x64 3M 128k", image.string()});
  require_same_as_qemu(scratch, image);
}

TEST_CASE("the streaming converter gives up on a compressed cluster that is not exactly one cluster, or overlaps a table") {
  kiln::test::ScratchDir scratch;
  // base64 of random bytes: each 4 KiB cluster compresses to several sectors.
  fs::path text = scratch / "text.raw";
  run({"sh", "-c", "head -c 786432 /dev/urandom | base64 -w 0 > " + text.string()});
  fs::path image = scratch / "compressed.qcow2";
  run({"qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", text.string(), image.string()});
  std::vector<char> bytes = slurp(image);
  auto be64 = [&](const std::vector<char>& b, std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
    return v;
  };
  auto put64 = [](std::vector<char>& b, std::size_t at, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>(v >> (56 - 8 * i));
  };
  auto write = [&](const std::vector<char>& b, const char* name) {
    fs::path path = scratch / name;
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
    return path;
  };
  const std::uint64_t l2 = be64(bytes, be64(bytes, 40)) & 0x00fffffffffffe00ull;
  const std::uint64_t first = be64(bytes, l2);
  REQUIRE((first >> 62) == 1);  // the first guest cluster is compressed
  constexpr unsigned kShift = 62 - (12 - 8);
  const std::uint64_t host = first & ((1ull << kShift) - 1);
  // The compressed bytes cut short: the descriptor counts one sector fewer
  // than the deflate stream spans.
  {
    std::vector<char> cut = bytes;
    const std::uint64_t sectors = (first >> kShift) & 0xf;
    REQUIRE(sectors >= 1);
    put64(cut, l2, (first & ~(0xfull << kShift)) | ((sectors - 1) << kShift));
    require_gives_up(scratch, write(cut, "cut.qcow2"), "not exactly one cluster");
  }
  // Its bytes garbled: not a deflate stream.
  {
    std::vector<char> garbled = bytes;
    std::fill_n(garbled.begin() + static_cast<std::ptrdiff_t>(host), 16, static_cast<char>(0xff));
    require_gives_up(scratch, write(garbled, "garbled.qcow2"), "not exactly one cluster");
  }
  // Pointing into the L2 table itself.
  {
    std::vector<char> onto = bytes;
    put64(onto, l2, (first & ~((1ull << kShift) - 1)) | (l2 + 8));
    require_gives_up(scratch, write(onto, "onto.qcow2"), "overlaps a table");
  }
  // zstd named in the header without its incompatible feature bit.
  {
    fs::path zstd = scratch / "zstd.qcow2";
    run({"qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd", text.string(),
         zstd.string()});
    std::vector<char> unflagged = slurp(zstd);
    put64(unflagged, 72, be64(unflagged, 72) & ~(1ull << 3));
    require_gives_up(scratch, write(unflagged, "unflagged.qcow2"), "disagree");
  }
}

TEST_CASE("the streaming converter gives up when compressed clusters would write more than the room it was given, or when told not to decompress") {
  kiln::test::ScratchDir scratch;
  fs::path text = scratch / "text.raw";
  run({"sh", "-c", "yes kiln | head -c 4194304 > " + text.string()});
  fs::path image = scratch / "compressed.qcow2";
  run({"qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", text.string(), image.string()});
  std::vector<char> bytes = slurp(image);
  REQUIRE(bytes.size() < 1048576);  // 4 MiB of text in far less
  fs::path output = scratch / "streamed.raw";
  {
    kiln::image::Qcow2Stream converter(output, bytes.size(), /*max_written_bytes=*/1048576);
    converter.feed(bytes);
    kiln::UniqueFd fd = kiln::open_file(image, O_RDONLY);
    REQUIRE_FALSE(converter.finish(fd.get()));
    REQUIRE(converter.why().find("room") != std::string::npos);
    REQUIRE_FALSE(fs::exists(output));
  }
  // Told not to decompress (the fetch's default), it gives up at the first compressed cluster.
  {
    kiln::image::Qcow2Stream converter(output, bytes.size(), 4194304, /*decompress=*/false);
    converter.feed(bytes);
    kiln::UniqueFd fd = kiln::open_file(image, O_RDONLY);
    REQUIRE_FALSE(converter.finish(fd.get()));
    REQUIRE(converter.why().find("compressed clusters") != std::string::npos);
    REQUIRE_FALSE(fs::exists(output));
  }
  // With room for it, the same image streams.
  kiln::image::Qcow2Stream converter(output, bytes.size(), 4194304);
  converter.feed(bytes);
  kiln::UniqueFd fd = kiln::open_file(image, O_RDONLY);
  REQUIRE(converter.finish(fd.get()));
  REQUIRE(kiln::read_file(output) == kiln::read_file(text));
}
