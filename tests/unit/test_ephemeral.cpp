// Ephemeral bases, judged by blkid and by Nova's names for them.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <optional>

#include "assertions.h"
#include "kiln/disk/ephemeral.h"
#include "kiln/util/fs.h"
#include "kiln/util/hash.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

using kiln::ErrorCode;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1ULL << 30;

// One blkid probe value (TYPE, LABEL) of a file, without the newline.
std::string probe(const fs::path& file, const std::string& tag) {
  std::string value = kiln::run_checked({{"blkid", "-p", "-o", "value", "-s", tag, file.string()}});
  while (!value.empty() && value.back() == '\n') value.pop_back();
  return value;
}

std::uint64_t allocated_bytes(const fs::path& file) {
  struct stat status {};
  REQUIRE(::stat(file.c_str(), &status) == 0);
  return static_cast<std::uint64_t>(status.st_blocks) * 512;
}

// Sets PATH for the lifetime of the object, then puts the old one back.
class PathOverride {
 public:
  explicit PathOverride(const std::string& value) {
    if (const char* old = std::getenv("PATH")) old_ = old;
    ::setenv("PATH", value.c_str(), 1);
  }
  ~PathOverride() {
    if (old_) {
      ::setenv("PATH", old_->c_str(), 1);
    } else {
      ::unsetenv("PATH");
    }
  }
  PathOverride(const PathOverride&) = delete;
  PathOverride& operator=(const PathOverride&) = delete;

 private:
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("ephemeral bases carry Nova's names") {
  // Nova: md5 of the filesystem name, first 7 hex digits.
  REQUIRE(kiln::hex_digest_of("md5", "ext4").substr(0, 7) == "40d1d2c");
  REQUIRE(kiln::hex_digest_of("md5", "vfat").substr(0, 7) == "0706d66");
  REQUIRE(kiln::disk::ephemeral_base_name(456, "ext4") == "ephemeral_456_40d1d2c");  // nova's tests
  REQUIRE(kiln::disk::ephemeral_base_name(20, "vfat") == "ephemeral_20_0706d66");
  REQUIRE(kiln::disk::ephemeral_base_name(1, "ntfs") ==
          "ephemeral_1_" + kiln::hex_digest_of("md5", "ntfs").substr(0, 7));
}

// nova/privsep/fs.py _DEFAULT_FS_BY_OSTYPE and _DEFAULT_FILE_SYSTEM: an
// instance without os_type gets vfat (kiln gave ext4 before issue 16).
TEST_CASE("ephemeral disks are ntfs for windows, ext4 for linux and vfat otherwise, as nova") {
  REQUIRE(kiln::disk::ephemeral_filesystem_for("windows") == "ntfs");
  REQUIRE(kiln::disk::ephemeral_filesystem_for("linux") == "ext4");
  REQUIRE(kiln::disk::ephemeral_filesystem_for("") == "vfat");
  REQUIRE(kiln::disk::ephemeral_filesystem_for("plan9") == "vfat");
  REQUIRE(kiln::disk::kDefaultEphemeralFilesystem == "vfat");
}

TEST_CASE("an ephemeral base is a sparse ext4 filesystem labelled ephemeral0, made once") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  fs::path path;
  {
    auto base = kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "ext4");
    path = base.path;
    REQUIRE(path == scratch / "_base" / "ephemeral_1_40d1d2c");
    REQUIRE(base.size_bytes == kGiB);
  }
  REQUIRE(kiln::file_size(path) == kGiB);
  REQUIRE(allocated_bytes(path) < kGiB / 4);  // sparse: only the metadata mkfs wrote
  REQUIRE(probe(path, "TYPE") == "ext4");
  REQUIRE(probe(path, "LABEL") == "ephemeral0");
  REQUIRE(kiln::run({{"e2fsck", "-n", "-f", path.string()}}).exit_code == 0);

  auto written = fs::last_write_time(path);
  auto again = kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "ext4");
  REQUIRE(again.path == path);
  REQUIRE(fs::last_write_time(again.path) == written);
  REQUIRE(kiln::test::tree_listing(scratch / "_base") == "ephemeral_1_40d1d2c 1073741824\n");
  REQUIRE(fs::exists(scratch / "locks" / "kiln-ephemeral_1_40d1d2c"));
}

TEST_CASE("an ephemeral base can be vfat, labelled in FAT's upper case") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  auto base = kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "vfat");
  REQUIRE(base.path == scratch / "_base" / "ephemeral_1_0706d66");
  REQUIRE(probe(base.path, "TYPE") == "vfat");
  REQUIRE(probe(base.path, "LABEL") == "EPHEMERAL0");
  REQUIRE(kiln::run({{"fsck.vfat", "-n", base.path.string()}}).exit_code == 0);
}

TEST_CASE("an ephemeral base for a Windows guest is ntfs when mkfs.ntfs is installed") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  std::string filesystem = kiln::disk::ephemeral_filesystem_for("windows");
  auto base =
      kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, filesystem);
  REQUIRE(probe(base.path, "TYPE") == "ntfs");
  REQUIRE(probe(base.path, "LABEL") == "ephemeral0");
  REQUIRE(allocated_bytes(base.path) < kGiB / 4);  // -Q: not zeroed
}

TEST_CASE("without mkfs.ntfs a Windows ephemeral base is refused and nothing is left") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  fs::create_directories(scratch / "empty-bin");
  PathOverride path((scratch / "empty-bin").string());
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "ntfs"),
      ErrorCode::kSubprocessFailed,
      "mkfs.ntfs is not installed on this host (Debian package ntfs-3g)");
  REQUIRE(kiln::test::tree_listing(scratch / "_base") == "");
}

TEST_CASE("an existing ephemeral base is reused even where its mkfs is missing") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  fs::path made =
      kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "vfat").path;
  fs::create_directories(scratch / "empty-bin");
  PathOverride path((scratch / "empty-bin").string());
  auto reused = kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "vfat");
  REQUIRE(reused.path == made);
}

TEST_CASE("unsupported ephemeral filesystems and sizes are refused before anything is made") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "zfs"),
      ErrorCode::kInvalidArgument, "'zfs' is not supported");
  REQUIRE_KILN_ERROR(kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 0, "ext4"),
                     ErrorCode::kInvalidArgument);
  REQUIRE_KILN_ERROR(kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks",
                                                       kiln::disk::kMaxEphemeralGb + 1, "ext4"),
                     ErrorCode::kInvalidArgument);
  REQUIRE(kiln::test::tree_listing(scratch.path()) == "_base/\n");
}

TEST_CASE("a failed mkfs leaves neither the base nor its .part") {
  kiln::test::ScratchDir scratch;
  fs::create_directories(scratch / "_base");
  // A mkfs.ext4 that always fails, first on PATH.
  fs::create_directories(scratch / "bin");
  kiln::test::write_text(scratch / "bin" / "mkfs.ext4", "#!/bin/sh\necho 'no space' >&2\nexit 1\n");
  fs::permissions(scratch / "bin" / "mkfs.ext4", fs::perms::owner_all);
  PathOverride path((scratch / "bin").string() + ":" + std::getenv("PATH"));
  REQUIRE_KILN_ERROR_MENTIONS(
      kiln::disk::ensure_ephemeral_base(scratch / "_base", scratch / "locks", 1, "ext4"),
      ErrorCode::kSubprocessFailed, "no space");
  REQUIRE(kiln::test::tree_listing(scratch / "_base") == "");
}
