#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <thread>
#include <xxhash.h>

#include "kiln/cache/image_cache.h"
#include "kiln/util/chunk_pipeline.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/lock.h"
#include "kiln/util/sparse_writer.h"
#include "kiln/util/subprocess.h"
#include "kiln/util/uuid.h"
#include "assertions.h"
#include "scratch.h"

using kiln::ErrorCode;
namespace fs = std::filesystem;

TEST_CASE("a base is named by the sha1 of the image id, as Nova names it") {
  // Example from Nova's imagecache (notes/nova.md §1.1).
  REQUIRE(kiln::cache::base_name_for("c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11") ==
          "3688299b644f42f5cfa0f44f05e5c5556d0c20e7");
}

TEST_CASE("hashers produce the standard digests and refuse unknown algorithms") {
  REQUIRE(kiln::hex_digest_of("md5", "abc") == "900150983cd24fb0d6963f7d28e17f72");
  REQUIRE(kiln::hex_digest_of("sha256", "abc") ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  kiln::Hasher incremental("sha512");
  incremental.update(std::string("a"));
  incremental.update(std::string("bc"));
  REQUIRE(incremental.hex_digest() == kiln::hex_digest_of("sha512", "abc"));
  REQUIRE_KILN_ERROR(kiln::Hasher("crc-nonsense"), ErrorCode::kInvalidArgument);
}

TEST_CASE("instance uuids are accepted only in canonical form and lowercased") {
  REQUIRE(kiln::normalize_uuid("1B4E28BA-2FA1-11D2-883F-0016D3CCA427") ==
          "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
  for (std::string bad : {"", "../../etc/passwd", "1b4e28ba2fa111d2883f0016d3cca427",
                          "1b4e28ba-2fa1-11d2-883f-0016d3cca42/", "1b4e28ba-2fa1-11d2-883f-0016d3cca4270",
                          "1b4e28ba-2fa1-11d2-883f_0016d3cca427"}) {
    INFO(bad);
    REQUIRE_KILN_ERROR(kiln::normalize_uuid(bad), ErrorCode::kInvalidUuid);
  }
}

TEST_CASE("an atomic write replaces the whole file and leaves no temporary") {
  kiln::test::ScratchDir scratch;
  fs::path file = scratch / "disk.info";
  kiln::atomic_write_file(file, "first\n");
  kiln::atomic_write_file(file, "second\n");
  REQUIRE(kiln::read_file(file) == "second\n");
  REQUIRE(kiln::test::tree_listing(scratch.path()) == "disk.info 7\n");
}

TEST_CASE("a temporary path is removed unless kept") {
  kiln::test::ScratchDir scratch;
  {
    kiln::TemporaryPath removed(scratch / "half-built");
    fs::create_directories(removed.path() / "inner");
    kiln::TemporaryPath kept(scratch / "finished");
    kiln::test::write_text(kept.path(), "x");
    kept.keep();
  }
  REQUIRE(kiln::test::tree_listing(scratch.path()) == "finished 1\n");
}

TEST_CASE("the sparse writer keeps content and leaves zero blocks as holes") {
  kiln::test::ScratchDir scratch;
  fs::path file = scratch / "base.part";
  std::string content(8 * 1024 * 1024, '\0');
  content.replace(0, 5, "start");
  content.replace(content.size() - 3, 3, "end");
  {
    kiln::UniqueFd fd = kiln::open_file(file, O_WRONLY | O_CREAT | O_EXCL);
    kiln::SparseWriter writer(fd.get(), file);
    // Uneven chunks, as they arrive from the network.
    for (std::size_t offset = 0; offset < content.size(); offset += 65521) {
      writer.write(std::string_view(content).substr(offset, 65521));
    }
    writer.finish();
    REQUIRE(writer.bytes_written() == content.size());
  }
  REQUIRE(kiln::read_file(file) == content);
  struct stat info {};
  REQUIRE(::stat(file.c_str(), &info) == 0);
  REQUIRE(info.st_blocks * 512 <= 64 * 1024);  // two 4 KiB blocks of data, not 8 MiB
}

TEST_CASE("a trailing run of zeros still counts in the file size") {
  kiln::test::ScratchDir scratch;
  fs::path file = scratch / "zeros";
  kiln::UniqueFd fd = kiln::open_file(file, O_WRONLY | O_CREAT | O_EXCL);
  kiln::SparseWriter writer(fd.get(), file);
  writer.write(std::string(10000, '\0'));
  writer.finish();
  REQUIRE(kiln::file_size(file) == 10000);
}

namespace {

// The data digest by its definition (kiln/util/data_digest.h), from libxxhash
// directly: for each non-zero 4 KiB block its offset (le64) and bytes, then the size.
std::string digest_by_definition(const std::string& content) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  auto le64 = [&](std::uint64_t value) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
    XXH3_128bits_update(state, bytes, 8);
  };
  for (std::size_t offset = 0; offset < content.size(); offset += 4096) {
    std::string block = content.substr(offset, 4096);
    if (block.find_first_not_of('\0') == std::string::npos) continue;
    le64(offset);
    XXH3_128bits_update(state, block.data(), block.size());
  }
  le64(content.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state));
  XXH3_freeState(state);
  char hex[33];
  for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", canonical.digest[i]);
  return hex;
}

void write_at(const fs::path& file, std::uint64_t offset, std::string_view bytes) {
  kiln::UniqueFd fd = kiln::open_file(file, O_WRONLY);
  REQUIRE(::pwrite(fd.get(), bytes.data(), bytes.size(), static_cast<off_t>(offset)) ==
          static_cast<ssize_t>(bytes.size()));
}

}  // namespace

TEST_CASE("the data digest is its definition, reads only data extents and depends on content, not on holes") {
  kiln::test::ScratchDir scratch;
  // 3 MiB + 100 bytes: data at 0, a hole, data at 1 MiB + 4 KiB, a short last block.
  std::string content(3 * 1024 * 1024 + 100, '\0');
  content.replace(0, 5, "start");
  content.replace(1024 * 1024 + 4096, 9000, std::string(9000, 'x'));
  content.replace(content.size() - 3, 3, "end");
  fs::path sparse = scratch / "sparse";
  {
    kiln::UniqueFd fd = kiln::open_file(sparse, O_WRONLY | O_CREAT | O_EXCL);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(content.size())) == 0);
  }
  write_at(sparse, 0, "start");
  write_at(sparse, 1024 * 1024 + 4096, std::string(9000, 'x'));
  write_at(sparse, content.size() - 3, "end");
  REQUIRE(kiln::read_file(sparse) == content);
  // The same bytes with every hole filled with written zeros.
  fs::path dense = scratch / "dense";
  kiln::test::write_text(dense, content);

  std::string expected = digest_by_definition(content);
  REQUIRE(kiln::data_digest_of_file(sparse) == expected);
  REQUIRE(kiln::data_digest_of_file(dense) == expected);
  kiln::DataDigest streamed;
  streamed.add(0, content);
  REQUIRE(streamed.hex_digest(content.size()) == expected);

  SECTION("a changed byte in a data extent changes it") {
    write_at(sparse, 1024 * 1024 + 5000, "y");
    REQUIRE(kiln::data_digest_of_file(sparse) != expected);
  }
  SECTION("a byte written into a hole changes it") {
    write_at(sparse, 2 * 1024 * 1024, "z");
    REQUIRE(kiln::data_digest_of_file(sparse) != expected);
  }
  SECTION("a data block that became zeros changes it") {
    write_at(sparse, 0, std::string(5, '\0'));
    REQUIRE(kiln::data_digest_of_file(sparse) != expected);
  }
  SECTION("a longer file of the same data differs") {
    REQUIRE(::truncate(sparse.c_str(), static_cast<off_t>(content.size() + 4096)) == 0);
    REQUIRE(kiln::data_digest_of_file(sparse) != expected);
  }
}

TEST_CASE("the sparse writer feeds the data digest the blocks it writes") {
  kiln::test::ScratchDir scratch;
  fs::path file = scratch / "base.part";
  std::string content(5 * 1024 * 1024 + 7, '\0');
  for (std::size_t offset = 3000; offset < content.size(); offset += 700000) content.replace(offset, 6000, std::string(6000, 'q'));
  kiln::DataDigest digest;
  {
    kiln::UniqueFd fd = kiln::open_file(file, O_WRONLY | O_CREAT | O_EXCL);
    kiln::SparseWriter writer(fd.get(), file, {.digest = &digest, .write_behind = true});
    for (std::size_t offset = 0; offset < content.size(); offset += 65521) {
      writer.write(std::string_view(content).substr(offset, 65521));
    }
    writer.finish();
  }
  REQUIRE(kiln::read_file(file) == content);
  REQUIRE(digest.hex_digest(content.size()) == digest_by_definition(content));
}

TEST_CASE("every consumer of a chunk pipeline sees every byte in order") {
  std::string content(5 * 1000 * 1000 + 3, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7 + i / 1000);
  std::string first, second;
  kiln::ChunkPipeline pipeline(
      {[&](std::span<const char> chunk) { first.append(chunk.data(), chunk.size()); },
       [&](std::span<const char> chunk) {
         second.append(chunk.data(), chunk.size());
         std::this_thread::yield();  // a slower consumer: the faster one waits within the window
       }},
      64 * 1024, 3);
  for (std::size_t offset = 0; offset < content.size(); offset += 10007) {
    pipeline.push(std::string_view(content).substr(offset, 10007));
  }
  pipeline.finish();
  REQUIRE(first == content);
  REQUIRE(second == content);
}

TEST_CASE("a consumer's error stops the pipeline and reaches the producer within the window") {
  constexpr std::size_t kChunk = 4096;
  constexpr std::size_t kDepth = 4;
  std::atomic<std::size_t> hashed{0};
  kiln::ChunkPipeline pipeline(
      {[&](std::span<const char> chunk) { hashed += chunk.size(); },
       [&](std::span<const char>) { throw kiln::Error(ErrorCode::kInsufficientSpace, "disk full"); }},
      kChunk, kDepth);
  std::string chunk(kChunk, 'a');
  std::size_t pushed = 0;
  try {
    for (; pushed < 1000; ++pushed) pipeline.push(chunk);
    pipeline.finish();
    FAIL("the writer's error never reached the producer");
  } catch (const kiln::Error& error) {
    REQUIRE(error.code() == ErrorCode::kInsufficientSpace);
  }
  // The producer is stopped once the window is full: depth chunks queued,
  // one being filled, never the whole stream.
  REQUIRE(pushed <= kDepth + 2);
}

TEST_CASE("subprocesses report output, exit codes, and are killed at the timeout") {
  auto result = kiln::run({{"sh", "-c", "echo out; echo err >&2; exit 3"}});
  REQUIRE(result.exit_code == 3);
  REQUIRE(result.out == "out\n");
  REQUIRE(result.err == "err\n");

  auto slow = kiln::run({{"sleep", "30"}, {}, std::chrono::milliseconds(200)});
  REQUIRE(slow.timed_out);

  REQUIRE_KILN_ERROR(kiln::run_checked({{"sh", "-c", "echo broken >&2; exit 1"}}),
                     ErrorCode::kSubprocessFailed);
  REQUIRE_KILN_ERROR(kiln::run({{"/nonexistent/program"}}), ErrorCode::kSubprocessFailed);
  REQUIRE(kiln::run({{"sh", "-c", "echo $LC_ALL"}}).out == "C\n");
}

TEST_CASE("a child killed at the timeout takes the processes it started with it") {
  auto result = kiln::run({{"sh", "-c", "sleep 300 & echo $!; wait"}, {}, std::chrono::milliseconds(300)});
  REQUIRE(result.timed_out);
  pid_t grandchild = std::stoi(result.out);
  // Killed with its group; the reaper (init or a subreaper) collects it.
  auto alive = [&] {
    std::ifstream stat("/proc/" + std::to_string(grandchild) + "/stat");
    std::string pid, name, state;
    return stat >> pid >> name >> state && state != "Z" && state != "X";
  };
  for (int i = 0; i < 100 && alive(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE_FALSE(alive());
}

TEST_CASE("resource limits apply to the child") {
  // 64 MiB of address space is too little for a shell asked to build a 256 MiB string.
  kiln::ResourceLimits limits;
  limits.address_space_bytes = 64ULL * 1024 * 1024;
  auto result = kiln::run({{"python3", "-c", "x = bytearray(256 * 1024 * 1024)"}, limits});
  REQUIRE(result.exit_code != 0);
  REQUIRE(result.err.find("MemoryError") != std::string::npos);
}

TEST_CASE("a file lock excludes other holders of the same lock file") {
  kiln::test::ScratchDir scratch;
  fs::path path = scratch / "locks" / "kiln-base";
  {
    kiln::FileLock lock(path);
    kiln::UniqueFd other = kiln::open_file(path, O_RDWR);
    REQUIRE(::flock(other.get(), LOCK_EX | LOCK_NB) != 0);
    REQUIRE(errno == EWOULDBLOCK);
  }
  kiln::UniqueFd other = kiln::open_file(path, O_RDWR);
  REQUIRE(::flock(other.get(), LOCK_EX | LOCK_NB) == 0);
}

TEST_CASE("write_new_file never replaces a file, and fsync_together names the path it could not sync") {
  kiln::test::ScratchDir scratch;
  kiln::write_new_file(scratch / "libvirt.xml", "<domain/>\n");
  REQUIRE(kiln::read_file(scratch / "libvirt.xml") == "<domain/>\n");
  REQUIRE_KILN_ERROR(kiln::write_new_file(scratch / "libvirt.xml", "other"), kiln::ErrorCode::kIoError);
  REQUIRE(kiln::read_file(scratch / "libvirt.xml") == "<domain/>\n");

  kiln::write_new_file(scratch / "disk.info", "{}\n");
  kiln::fsync_together({scratch / "libvirt.xml", scratch / "disk.info", scratch.path()});
  REQUIRE_KILN_ERROR_MENTIONS(kiln::fsync_together({scratch / "libvirt.xml", scratch / "gone"}),
                              kiln::ErrorCode::kIoError, (scratch / "gone").string());
  kiln::fsync_together({});
}

TEST_CASE("a full disk is insufficient_space, other filesystem errors io_error") {
  REQUIRE_KILN_ERROR_MENTIONS(kiln::throw_io_error("cannot write /x", ENOSPC), kiln::ErrorCode::kInsufficientSpace,
                              "cannot write /x: No space left on device");
  REQUIRE_KILN_ERROR(kiln::throw_io_error("cannot write /x", EDQUOT), kiln::ErrorCode::kInsufficientSpace);
  REQUIRE_KILN_ERROR_MENTIONS(kiln::throw_io_error("cannot write /x", EROFS), kiln::ErrorCode::kIoError,
                              "Read-only file system");
}
