// kiln/util/layout.h: every name kiln builds under instances_path parses back
// to the kind and subject it was built from, and names that only look like
// kiln's are refused.
#include <catch2/catch.hpp>
#include <set>

#include "kiln/util/layout.h"

namespace fs = std::filesystem;
namespace layout = kiln::layout;
using layout::Kind;
using layout::Place;

namespace {

const fs::path kInstances = "/var/lib/kiln/instances";
const std::string kUuid = "0f0e0d0c-0b0a-4908-8706-050403020100";

// Parses the last component of `path` in `place` and checks where it is.
layout::ParsedName parsed(Place place, const fs::path& path, const fs::path& expected_parent) {
  REQUIRE(path.parent_path() == expected_parent);
  auto result = layout::parse(place, path.filename().string());
  REQUIRE(result.has_value());
  return *result;
}

std::string mkdtemp_filled(std::string template_path) {
  REQUIRE(template_path.ends_with("XXXXXX"));
  template_path.replace(template_path.size() - 6, 6, "a1B2c3");
  return template_path;
}

}  // namespace

TEST_CASE("every name at the top of instances_path parses back to what built it") {
  auto base_directory = parsed(Place::kInstancesPath, layout::base_directory(kInstances), kInstances);
  REQUIRE(base_directory.kind == Kind::kBaseDirectory);
  REQUIRE(parsed(Place::kInstancesPath, layout::lock_directory(kInstances), kInstances).kind == Kind::kLockDirectory);
  REQUIRE(parsed(Place::kInstancesPath, layout::operation_journal_path(kInstances), kInstances).kind ==
          Kind::kOperationJournal);

  auto directory = parsed(Place::kInstancesPath, layout::instance_directory(kInstances, kUuid), kInstances);
  REQUIRE(directory.kind == Kind::kInstanceDirectory);
  REQUIRE(directory.subject == kUuid);

  auto building = parsed(Place::kInstancesPath, mkdtemp_filled(layout::building_template(kInstances, kUuid)), kInstances);
  REQUIRE(building.kind == Kind::kBuilding);
  REQUIRE(building.subject == kUuid);
  auto deleting = parsed(Place::kInstancesPath, mkdtemp_filled(layout::deleting_template(kInstances, kUuid)), kInstances);
  REQUIRE(deleting.kind == Kind::kDeleting);
  REQUIRE(deleting.subject == kUuid);

  auto probe = layout::parse(Place::kInstancesPath, layout::direct_io_probe_name());
  REQUIRE(probe.has_value());
  REQUIRE(probe->kind == Kind::kDirectIoProbe);
}

TEST_CASE("every name in _base parses back to its kind and the base it belongs to") {
  const fs::path base_directory = layout::base_directory(kInstances);
  std::string image = layout::image_base_name("c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11");
  REQUIRE(image == "3688299b644f42f5cfa0f44f05e5c5556d0c20e7");  // sha1 of the id string (nova's name)
  std::string swap = layout::swap_base_name(512);
  REQUIRE(swap == "swap_512");
  std::string ephemeral = layout::ephemeral_base_name(20, "vfat");
  REQUIRE(ephemeral == "ephemeral_20_0706d66");  // nova's own test value

  struct Expected {
    std::string base;
    Kind kind;
  };
  for (const auto& [name, kind] : {Expected{image, Kind::kImageBase}, Expected{swap, Kind::kSwapBase},
                                   Expected{ephemeral, Kind::kEphemeralBase}}) {
    CAPTURE(name);
    fs::path base = layout::base_path(kInstances, name);
    auto as_base = parsed(Place::kBaseDirectory, base, base_directory);
    REQUIRE(as_base.kind == kind);
    REQUIRE(as_base.subject == name);
    for (const auto& [path, derived] :
         {std::pair{layout::info_path(base), Kind::kInfo}, std::pair{layout::part_path(base), Kind::kPart},
          std::pair{layout::converted_path(base), Kind::kConverted},
          std::pair{fs::path(mkdtemp_filled(layout::sandbox_template(layout::converted_path(base)))),
                    Kind::kConversionSandbox}}) {
      CAPTURE(path);
      auto found = parsed(Place::kBaseDirectory, path, base_directory);
      REQUIRE(found.kind == derived);
      REQUIRE(found.subject == name);
    }
    auto info_temporary = parsed(Place::kBaseDirectory, layout::atomic_temporary_path(layout::info_path(base)),
                                 base_directory);
    REQUIRE(info_temporary.kind == Kind::kAtomicTemporary);
    REQUIRE(info_temporary.subject == layout::info_path(base).filename().string());
  }
}

TEST_CASE("every name in locks parses back to its kind and subject") {
  const fs::path locks = layout::lock_directory(kInstances);
  std::string base = layout::image_base_name("some image");
  auto base_lock = parsed(Place::kLockDirectory, layout::base_lock_path(kInstances, base), locks);
  REQUIRE(base_lock.kind == Kind::kBaseLock);
  REQUIRE(base_lock.subject == base);
  REQUIRE(layout::base_lock_path(kInstances, base).filename() == layout::base_lock_name(base));
  auto failure = parsed(Place::kLockDirectory, layout::failure_record_path(kInstances, base), locks);
  REQUIRE(failure.kind == Kind::kFailureRecord);
  REQUIRE(failure.subject == base);
  auto failure_temporary =
      parsed(Place::kLockDirectory, layout::atomic_temporary_path(layout::failure_record_path(kInstances, base)), locks);
  REQUIRE(failure_temporary.kind == Kind::kAtomicTemporary);
  REQUIRE(failure_temporary.subject == layout::failure_record_path(kInstances, base).filename().string());
  auto instance_lock = parsed(Place::kLockDirectory, layout::instance_lock_path(kInstances, kUuid), locks);
  REQUIRE(instance_lock.kind == Kind::kInstanceLock);
  REQUIRE(instance_lock.subject == kUuid);
  auto nova = parsed(Place::kLockDirectory, layout::nova_lock_path(kInstances, "storage-registry-lock"), locks);
  REQUIRE(nova.kind == Kind::kNovaLock);
  REQUIRE(nova.subject == "storage-registry-lock");
  REQUIRE(parsed(Place::kLockDirectory, layout::agent_lock_path(kInstances), locks).kind == Kind::kAgentLock);
}

TEST_CASE("every member of an instance directory parses back to its kind") {
  const fs::path directory = layout::instance_directory(kInstances, kUuid);
  std::set<Kind> seen;
  for (std::string_view name : {layout::kRootDisk, layout::kEphemeralDisk, layout::kSwapDisk, layout::kDiskInfo,
                                layout::kConsoleLog, layout::kLibvirtXml, layout::kNvram, layout::kProvisioningMarker,
                                layout::kDeletionMarker}) {
    CAPTURE(name);
    auto found = parsed(Place::kInstanceDirectory, layout::member(directory, name), directory);
    REQUIRE(found.subject.empty());
    seen.insert(found.kind);
  }
  REQUIRE(seen.size() == 9);  // nine names, nine kinds: no two names parse alike
  REQUIRE_FALSE(layout::parse(Place::kInstanceDirectory, "disk.eph0"));
}

TEST_CASE("an instance directory is a canonical lowercase uuid and nothing else") {
  REQUIRE(layout::is_instance_directory_name(kUuid));
  for (const char* name : {"0F0E0D0C-0B0A-4908-8706-050403020100",  // upper case: normalize_uuid() never gives it
                           "0f0e0d0c0b0a490887060504030201000",      // no dashes
                           "{0f0e0d0c-0b0a-4908-8706-050403020100}", "0f0e0d0c-0b0a-4908-8706-050403020100_resize",
                           "0f0e0d0c-0b0a-4908-8706-050403020100_del", "0f0e0d0c-0b0a-4908-8706-05040302010g", "_base",
                           "locks", "", "..", "web"}) {
    CAPTURE(name);
    REQUIRE_FALSE(layout::is_instance_directory_name(name));
    auto found = layout::parse(Place::kInstancesPath, name);
    REQUIRE((!found || found->kind != Kind::kInstanceDirectory));
  }
  // The cache's in-use scan is wider on purpose: nova's _resize and _del
  // directories and kiln's own building directories may hold disks on a base.
  REQUIRE(layout::may_hold_base_users("0f0e0d0c-0b0a-4908-8706-050403020100_resize"));
  REQUIRE(layout::may_hold_base_users(".0f0e0d0c-0b0a-4908-8706-050403020100.building-a1B2c3"));
  REQUIRE(layout::may_hold_base_users(kUuid));
  REQUIRE_FALSE(layout::may_hold_base_users("_base"));
  REQUIRE_FALSE(layout::may_hold_base_users("locks"));
}

TEST_CASE("names that only resemble kiln's are not parsed as kiln's") {
  // A temporary of an upper-case or malformed uuid, a probe with letters,
  // a .part of something that is not a base, a lock of no base.
  REQUIRE_FALSE(layout::parse(Place::kInstancesPath, ".0F0E0D0C-0B0A-4908-8706-050403020100.building-a1B2c3"));
  REQUIRE_FALSE(layout::parse(Place::kInstancesPath, ".0f0e0d0c-0b0a-4908-8706-050403020100.building-a1B2"));
  REQUIRE_FALSE(layout::parse(Place::kInstancesPath, ".directio.test.not-a-number"));
  REQUIRE_FALSE(layout::parse(Place::kBaseDirectory, "notes.part"));
  REQUIRE_FALSE(layout::parse(Place::kBaseDirectory, "ephemeral_20_vfat"));
  REQUIRE_FALSE(layout::parse(Place::kBaseDirectory, "swap_"));
  REQUIRE_FALSE(layout::parse(Place::kBaseDirectory, "9D0B3B8E4E0FBD06C4A8CE4EE8E0AB1B2A6C70E9"));
  REQUIRE_FALSE(layout::parse(Place::kLockDirectory, "kiln-agent"));
  REQUIRE_FALSE(layout::parse(Place::kLockDirectory, "instance-web"));
  REQUIRE_FALSE(layout::parse(Place::kLockDirectory, "nova-"));
}
