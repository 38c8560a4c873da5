#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "kiln/disk/disk_info.h"
#include "kiln/disk/overlay.h"
#include "kiln/disk/swap.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

using kiln::ErrorCode;
using nlohmann::json;

TEST_CASE("disk.info maps absolute disk paths to formats on one JSON line") {
  kiln::test::ScratchDir scratch;
  kiln::disk::DiskInfo info;
  info.add(scratch / "disk", "qcow2");
  info.add(scratch / "disk.swap", "qcow2");
  info.save(scratch / "disk.info");
  std::string text = kiln::read_file(scratch / "disk.info");
  REQUIRE(text.back() == '\n');
  REQUIRE(text.find('\n') == text.size() - 1);
  REQUIRE(json::parse(text) == json{{(scratch / "disk").string(), "qcow2"},
                                    {(scratch / "disk.swap").string(), "qcow2"}});
  auto loaded = kiln::disk::DiskInfo::load(scratch / "disk.info");
  REQUIRE(loaded.entries() == info.entries());
}

TEST_CASE("disk.info refuses to change the format of a recorded disk") {
  kiln::test::ScratchDir scratch;
  kiln::disk::DiskInfo info;
  info.add(scratch / "disk", "qcow2");
  info.add(scratch / "disk", "qcow2");  // the same again is fine
  REQUIRE_KILN_ERROR_MENTIONS(info.add(scratch / "disk", "raw"), ErrorCode::kInvalidArgument,
                              "refusing to change it to raw");
  REQUIRE_KILN_ERROR(info.add("relative/disk", "qcow2"), ErrorCode::kInvalidArgument);
}

TEST_CASE("a corrupt disk.info is an error, not an empty map") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "disk.info", "[1,2]\n");
  REQUIRE_KILN_ERROR(kiln::disk::DiskInfo::load(scratch / "disk.info"), ErrorCode::kIoError);
}

TEST_CASE("an overlay is qcow2 backed by the raw base with the requested virtual size") {
  kiln::test::ScratchDir scratch;
  kiln::run_checked({{"qemu-img", "create", "-q", "-f", "raw", (scratch / "base").string(), "64M"}});
  kiln::disk::create_overlay(scratch / "disk", scratch / "base", 2ULL << 30);
  auto info = json::parse(kiln::run_checked(
      {{"qemu-img", "info", "--output=json", "-f", "qcow2", (scratch / "disk").string()}}));
  REQUIRE(info["format"] == "qcow2");
  REQUIRE(info["virtual-size"] == 2ULL << 30);
  REQUIRE(info["backing-filename"] == (scratch / "base").string());
  REQUIRE(info["backing-filename-format"] == "raw");
  REQUIRE(kiln::run({{"qemu-img", "check", "-q", "-f", "qcow2", (scratch / "disk").string()}}).exit_code == 0);
  // Never over an existing file.
  REQUIRE_KILN_ERROR(kiln::disk::create_overlay(scratch / "disk", scratch / "base", 2ULL << 30),
                     ErrorCode::kIoError);
}

TEST_CASE("a swap base carries a swap signature and is made once") {
  kiln::test::ScratchDir scratch;
  std::filesystem::create_directories(scratch / "_base");
  std::filesystem::path path;
  {
    auto swap = kiln::disk::ensure_swap_base(scratch / "_base", scratch / "locks", 16);
    path = swap.path;
    REQUIRE(path == scratch / "_base" / "swap_16");
    REQUIRE(swap.size_bytes == 16ULL << 20);
  }
  REQUIRE(kiln::file_size(path) == 16ULL << 20);
  auto type = kiln::run_checked({{"blkid", "-p", "-o", "value", "-s", "TYPE", path.string()}});
  REQUIRE(type == "swap\n");
  auto inode_before = std::filesystem::last_write_time(path);
  auto again = kiln::disk::ensure_swap_base(scratch / "_base", scratch / "locks", 16);
  REQUIRE(std::filesystem::last_write_time(again.path) == inode_before);
  REQUIRE(kiln::test::tree_listing(scratch / "_base") == "swap_16 16777216\n");
}
