// Bringing the instance directories and libvirt back in line after a crash,
// a host reinstall or an operator's mistake; kilnd runs it at start.
//
// reconcile() compares every directory under instances_path with libvirt's
// domains and the provisioning markers:
//   - a directory whose boot never succeeded (provisioning marker present,
//     no process holding its lock: a crash, or a failed boot that could not
//     undefine its domain, "rollback_pending") is undone as a failed boot is:
//     its domain, if libvirt has it, powered off and undefined, then the
//     directory removed, so the same boot can be retried;
//   - a directory whose delete a crash cut short (deletion marker) is deleted;
//   - a directory without a domain is reported: recover_instance() re-defines
//     it; reconcile never deletes disks that may hold a guest's data;
//   - a directory kiln did not make (no libvirt.xml with kiln's metadata:
//     nova's, on a shared instances path) is reported as foreign and left
//     alone, unless libvirt defines a domain for it;
//   - a kiln domain without a directory is reported, never undefined;
//   - with `rbd` (images_type = rbd): a boot that never finished, or a
//     delete cut short, loses its <uuid>_* images in the pool too, and so
//     does a boot that died before publishing its directory (its building
//     directory with a marker, nobody holding its lock, the uuid without a
//     directory or a domain: the boot checked that no <uuid>_disk existed
//     before it cloned); other images <uuid>_* with neither a directory nor
//     a domain (an instance evacuated here, a crash of another tool) are
//     reported, never removed: they may hold a guest's data;
// and repairs the image cache (kiln/cache/maintenance.h repair_cache), which
// also removes the temporaries of kiln/util/temporaries.h whose owner is gone
// (instance directories being built or deleted, O_DIRECT probes).
// With dry_run nothing changes and the actions say what would be done.
//
// recover_instance() re-defines a domain from its directory's libvirt.xml,
// after checking that every disk the XML names exists and that each backing
// chain is whole and safe; a disk in the pool must be one of the instance's
// own <uuid>_* images of the configured pool, and exist.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/cache/maintenance.h"
#include "kiln/virt/connection.h"

namespace kiln::instance {

struct ReconcileFinding {
  std::string uuid;
  // "half_built", "half_defined", "rollback_pending", "half_deleted",
  // "directory_without_domain", "foreign_directory", "domain_without_directory",
  // "rbd_images_without_instance", "rbd_not_checked" (kiln/rpc/steps.h; uuid "")
  std::string kind;
  std::string action;  // what was (or, on a dry run, would be) done, in words
  bool changed = false;
};

struct ReconcileReport {
  std::vector<ReconcileFinding> findings;  // consistent instances are not listed
  std::vector<cache::RepairAction> cache_repairs;
  std::size_t instances_seen = 0;
};

struct RbdHost;

ReconcileReport reconcile(const std::filesystem::path& instances_path, virt::Connection& libvirt,
                          bool dry_run, const RbdHost* rbd = nullptr);

nlohmann::json to_json(const ReconcileReport& report);

struct RecoverResult {
  std::string uuid;
  std::string domain_name;
  std::string domain_state;
  bool already_defined = false;  // libvirt had it: nothing was re-defined
};

// {"uuid", "domain": {"name", "state"}, "already_defined"}: kilnctl
// instance recover --json.
void to_json(nlohmann::json& out, const RecoverResult& result);

// Throws kiln::Error kNotFound (no directory or no libvirt.xml),
// kInstanceBroken (a disk missing, a backing chain broken or unsafe, a
// half-built directory, XML whose uuid is not the directory's; an RBD disk
// that is missing from `rbd`'s pool, is not one of the instance's own images
// there, or is attached while `rbd` is nullptr), kLibvirtError, kRbdError.
RecoverResult recover_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                               virt::Connection& libvirt, bool start, const RbdHost* rbd = nullptr);

}  // namespace kiln::instance
