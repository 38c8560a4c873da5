#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <thread>

#include "kiln/cache/image_cache.h"
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
