// Internal to lib/instance: an RBD boot's disks (images_type = rbd).
//
// The root disk is a clone of Glance's own protected snapshot when Glance
// keeps the image raw in this cluster; otherwise a clone of kiln's pool base
// of the image (kiln/rbd/pool_base.h), which the first host to need it
// downloads, verifies and converts through its image cache and writes into
// the pool once. Swap and ephemeral disks are clones of pool bases too,
// made from the local swap/ephemeral bases. Every disk is a network disk in
// the domain and an "rbd:<pool>/<image>" entry in disk.info.
// Everything that can be checked is checked by check_rbd_boot() before
// anything is created; the clones a boot made are removed again unless the
// boot keeps them (RbdClones).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kiln/disk/disk_info.h"
#include "kiln/instance/provision.h"
#include "kiln/rbd/pool_base.h"

namespace kiln::instance {

// What the root disk is cloned from: Glance's snapshot, or (nullopt) kiln's
// pool base of the image.
struct RbdRoot {
  std::optional<rbd::Location> glance_snapshot;
};

// Refuses what an RBD boot cannot do, before anything is created: kernel /
// ramdisk images and ISOs (kInvalidArgument), a Glance RBD location kiln
// would not parse (kRbdLocationInvalid) or whose snapshot is missing or
// unprotected, a libvirt without the ceph secret (kConfigInvalid), an
// existing <uuid>_disk (kInstanceExists).
RbdRoot check_rbd_boot(const Host& host, const glance::ImageRecord& image, bool has_kernel, const std::string& uuid);

// The clones a boot made, removed again (in reverse) unless keep() is called.
class RbdClones {
 public:
  explicit RbdClones(const RbdHost& rbd) : rbd_(rbd) {}
  RbdClones(const RbdClones&) = delete;
  RbdClones& operator=(const RbdClones&) = delete;
  ~RbdClones();
  void add(std::string image) { images_.push_back(std::move(image)); }
  void keep() { kept_ = true; }

 private:
  const RbdHost& rbd_;
  std::vector<std::string> images_;
  bool kept_ = false;
};

// How a boot gets the local file a pool base is written from, when the pool
// has none yet: the image's verified raw base, from the host's image cache.
using LocalBaseSource = std::function<rbd::LocalFile()>;

// Clones the root disk (grown to the flavor), and the swap and ephemeral
// disks the flavor asks for, into the pool; points the spec's disks at them
// and lists them in disk_info. `root_base` is called only when the image has
// no pool base yet and Glance has no snapshot to clone. The result says
// where the root disk came from and what was downloaded.
void build_rbd_disks(const BootRequest& request, const Host& host, const glance::ImageRecord& image,
                     const RbdRoot& root, const LocalBaseSource& root_base, const std::string& ephemeral_filesystem,
                     const InstanceDir& directory, virt::DomainSpec& spec, disk::DiskInfo& disk_info,
                     BootResult& result, RbdClones& made);

}  // namespace kiln::instance
