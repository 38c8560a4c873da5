// The host layout: every name kiln uses under instances_path, built and
// parsed back in one place (as LevelDB's db/filename.h does for a database).
//
// Promise: no other file of kiln spells a name below instances_path; each
// builds it here and asks here what a name it finds is. A name a builder
// returns parses back to the same kind and subject (tests/unit/test_layout.cpp),
// and tools/check-layout-literals (a CTest) fails when a module
// spells one of these literals itself. Pure functions of their arguments:
// thread-safe, no I/O (except the random suffix of direct_io_probe_name()).
//
// Why in util: the names are a fact every module above util needs (cache,
// disk, instance, rpc, the agent, kilnctl) and that depends only on util's
// hashing and uuid checks; a module of its own would sit between util and
// everything else with no job but this file, so it is a util file, and the
// module order stays DESIGN's.
//
//   <instances_path>/
//     _base/<sha1hex(image id)>            image base (raw)        base_path(image_base_name())
//     _base/<base>.info                    its record (JSON)       info_path()
//     _base/<base>.part                    download in progress    part_path()
//     _base/<base>.converted               conversion in progress  converted_path()
//     _base/.<base>.converted.sandbox-XXXXXX  a conversion's private directory
//     _base/<name>.tmp                     atomic_write_file's temporary (kiln/util/fs.h)
//     _base/swap_<MB>                      swap base (nova's name)
//     _base/ephemeral_<GB>_<md5(fs)[:7]>   ephemeral base (nova's name)
//     locks/kiln-<base>                    per-base flock           base_lock_path()
//     locks/kiln-<base>.failed             failed-download record   failure_record_path()
//     locks/instance-<uuid>                a provision's lock       instance_lock_path()
//     locks/nova-<name>                    nova's locks: never kiln's to remove
//     locks/kilnd.lock                     one agent per path       agent_lock_path()
//     operations.log                       the operations journal   operation_journal_path()
//     .<uuid>.building-XXXXXX              an instance directory being built
//     .<uuid>.deleting-XXXXXX              an instance directory being removed
//     .directio.test.<n>                   the O_DIRECT probe
//     <uuid>/                              an instance directory (canonical lowercase uuid)
//       disk disk.local disk.swap disk.info console.log libvirt.xml nvram.fd
//       .kiln-provisioning                 present until its boot succeeded
//       .kiln-deleting                     present once a delete has begun
//
// "Instance directory" has ONE meaning: a directory whose name is a
// canonical lowercase uuid (is_instance_directory_name()). The cache's in-use
// scan asks a different, wider question on purpose: which directories may
// hold a disk backed by a base (may_hold_base_users()). Nova's own
// <uuid>_resize and <uuid>_del directories, a directory kiln is building, an
// operator's copy: a base they use must not be pruned, and a false "in use"
// only delays a prune while a false "unused" destroys a guest's disk.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::layout {

// ---- names at the top of instances_path
inline constexpr std::string_view kBaseDirectory = "_base";
inline constexpr std::string_view kLockDirectory = "locks";
inline constexpr std::string_view kOperationJournal = "operations.log";
inline constexpr std::string_view kBuildingInfix = ".building-";
inline constexpr std::string_view kDeletingInfix = ".deleting-";
inline constexpr std::string_view kDirectIoProbePrefix = ".directio.test.";

// ---- names in _base
inline constexpr std::string_view kPartSuffix = ".part";
inline constexpr std::string_view kConvertedSuffix = ".converted";
inline constexpr std::string_view kInfoSuffix = ".info";
// atomic_write_file()'s temporary: "<final>.tmp" next to the final name.
inline constexpr std::string_view kAtomicTemporarySuffix = ".tmp";
// SandboxOutput's private directory: ".<final name>.sandbox-XXXXXX".
inline constexpr std::string_view kSandboxInfix = ".sandbox-";
inline constexpr std::string_view kSwapBasePrefix = "swap_";
inline constexpr std::string_view kEphemeralBasePrefix = "ephemeral_";
// Characters of md5(filesystem) in an ephemeral base's name (nova's).
inline constexpr std::size_t kEphemeralDigestLength = 7;

// ---- names in locks/
inline constexpr std::string_view kBaseLockPrefix = "kiln-";
inline constexpr std::string_view kFailureSuffix = ".failed";
inline constexpr std::string_view kInstanceLockPrefix = "instance-";
inline constexpr std::string_view kNovaLockPrefix = "nova-";
inline constexpr std::string_view kAgentLock = "kilnd.lock";

// ---- names in an instance directory (nova's, so operators' habits carry over)
inline constexpr std::string_view kRootDisk = "disk";
inline constexpr std::string_view kEphemeralDisk = "disk.local";
inline constexpr std::string_view kSwapDisk = "disk.swap";
// An instance's disks, in the order the guest sees them.
inline constexpr std::string_view kInstanceDisks[] = {kRootDisk, kEphemeralDisk, kSwapDisk};
inline constexpr std::string_view kDiskInfo = "disk.info";
inline constexpr std::string_view kConsoleLog = "console.log";
inline constexpr std::string_view kLibvirtXml = "libvirt.xml";
inline constexpr std::string_view kNvram = "nvram.fd";
inline constexpr std::string_view kProvisioningMarker = ".kiln-provisioning";
inline constexpr std::string_view kDeletionMarker = ".kiln-deleting";

// Every kind of name above; parse() tells which one a name is.
enum class Kind {
  // top of instances_path
  kBaseDirectory, kLockDirectory, kOperationJournal, kInstanceDirectory, kBuilding, kDeleting, kDirectIoProbe,
  // _base/
  kImageBase, kSwapBase, kEphemeralBase, kInfo, kPart, kConverted, kConversionSandbox, kAtomicTemporary,
  // locks/
  kBaseLock, kFailureRecord, kInstanceLock, kNovaLock, kAgentLock,
  // <uuid>/
  kRootDisk, kEphemeralDisk, kSwapDisk, kDiskInfo, kConsoleLog, kLibvirtXml, kNvram, kProvisioningMarker,
  kDeletionMarker,
};

// Where a name is found: the same text means different things in each place.
enum class Place { kInstancesPath, kBaseDirectory, kLockDirectory, kInstanceDirectory };

struct ParsedName {
  Kind kind;
  // What the name is about: the uuid (instance directory, building,
  // deleting, instance lock), the base's name (a base, its .info, .part,
  // .converted, sandbox, lock, failure record; for kAtomicTemporary the name
  // being written), nova's lock name, or "" (fixed names, the probe).
  std::string subject;
};

// What `name` (one path component) found in `place` is; nullopt for a name
// that is none of kiln's kinds (an operator's file, nova's instance
// directory, a base of a naming kiln does not know).
std::optional<ParsedName> parse(Place place, std::string_view name);

// The one rule for an instance directory's name: a canonical lowercase uuid.
bool is_instance_directory_name(std::string_view name);
// The cache's in-use scan: any directory at the top of instances_path but
// _base and locks may hold a disk backed by a base (see the opening note).
bool may_hold_base_users(std::string_view name);

// ---- builders. Paths are instances_path joined with the name; REQUIRES for
// each is the shape its parse() accepts (a canonical uuid, a base name).
std::filesystem::path base_directory(const std::filesystem::path& instances_path);
std::filesystem::path lock_directory(const std::filesystem::path& instances_path);
std::filesystem::path operation_journal_path(const std::filesystem::path& instances_path);
std::filesystem::path agent_lock_path(const std::filesystem::path& instances_path);
// <instances_path>/<uuid>; the caller has checked uuid (normalize_uuid()).
std::filesystem::path instance_directory(const std::filesystem::path& instances_path, const std::string& uuid);
// mkdtemp(3) templates: "<instances_path>/.<uuid>.building-XXXXXX", ".deleting-".
std::string building_template(const std::filesystem::path& instances_path, const std::string& uuid);
std::string deleting_template(const std::filesystem::path& instances_path, const std::string& uuid);
// ".directio.test.<random>", fresh at each call.
std::string direct_io_probe_name();

// The base of an image: the SHA-1 hex digest of the image id, as nova names it.
std::string image_base_name(std::string_view image_id);
std::string swap_base_name(std::uint64_t size_mb);
// Nova's: "ephemeral_<GB>_" + the first 7 hex digits of md5(filesystem).
std::string ephemeral_base_name(std::uint64_t size_gb, std::string_view filesystem);
std::filesystem::path base_path(const std::filesystem::path& instances_path, const std::string& base_name);
// Names next to a base (any path: these append to the file name).
std::filesystem::path info_path(const std::filesystem::path& base);
std::filesystem::path part_path(const std::filesystem::path& base);
std::filesystem::path converted_path(const std::filesystem::path& base);
std::filesystem::path atomic_temporary_path(const std::filesystem::path& final_path);
// mkdtemp(3) template of a sandboxed output's directory, next to `final_path`.
std::string sandbox_template(const std::filesystem::path& final_path);

// "kiln-<base>": the lock's name in locks/ (callers that were handed the lock directory).
std::string base_lock_name(const std::string& base_name);
std::filesystem::path base_lock_path(const std::filesystem::path& instances_path, const std::string& base_name);
std::filesystem::path failure_record_path(const std::filesystem::path& instances_path, const std::string& base_name);
std::filesystem::path instance_lock_path(const std::filesystem::path& instances_path, const std::string& uuid);
std::filesystem::path nova_lock_path(const std::filesystem::path& instances_path, const std::string& name);

// A member of an instance directory (any directory: a staged one too).
std::filesystem::path member(const std::filesystem::path& directory, std::string_view name);

}  // namespace kiln::layout
