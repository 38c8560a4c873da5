#include "rbd_disks.h"

#include "kiln/cache/image_cache.h"
#include "kiln/disk/ephemeral.h"
#include "kiln/disk/swap.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/rbd/location.h"
#include "kiln/util/error.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"

namespace kiln::instance {

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;

// The first rbd:// location of the image in the host's cluster, when Glance
// keeps it there raw; nullopt: the boot clones kiln's pool base instead.
std::optional<rbd::Location> glance_snapshot(const RbdHost& rbd, const glance::ImageRecord& image) {
  if (image.disk_format != "raw") return std::nullopt;
  for (const std::string& url : image.locations) {
    if (url.rfind("rbd://", 0) != 0) continue;
    rbd::Location location = rbd::parse_location(url);  // kRbdLocationInvalid: never guessed at
    if (location.fsid == rbd.cluster->fsid()) return location;
  }
  return std::nullopt;
}

virt::DiskFile network_disk(const RbdHost& rbd, const std::string& image) {
  std::vector<virt::CephMonitor> monitors;
  for (const rbd::Monitor& monitor : rbd.monitors) monitors.push_back({monitor.host, monitor.port});
  return virt::DiskFile{"", "raw", virt::RbdSource{image, monitors, rbd.user.empty() ? "admin" : rbd.user,
                                                   rbd.secret_uuid}};
}

// Clones `source` into <uuid>_<disk> (grown to `bytes`; 0: its own size) and
// records the clone with the boot.
RbdDisk clone_disk(const RbdHost& rbd, const rbd::Location& source, const std::string& uuid, std::string_view disk,
                   std::uint64_t bytes, disk::DiskInfo& disk_info, RbdClones& made, std::uint64_t* size) {
  rbd::Pool pool = rbd.cluster->open_pool(rbd.pool);
  rbd::ImageInfo clone = rbd::clone_instance_disk(*rbd.cluster, source, pool, uuid, disk, bytes);
  made.add(clone.name);
  disk_info.add_rbd(rbd.pool, clone.name);
  if (size) *size = clone.size_bytes;
  return RbdDisk{rbd.pool + "/" + clone.name, source.spec()};
}

// The pool base made from a local swap or ephemeral base (mkswap / mkfs'd once per host, imported once per cluster).
// The local file is made in _base, which an RBD host may not have yet (it
// needs none for images Glance keeps in the cluster).
rbd::Location scratch_base(const Host& host, const std::string& local_name,
                           const std::function<rbd::LocalFile()>& make) {
  const RbdHost& rbd = *host.rbd;
  return rbd::ensure_pool_base(*rbd.cluster, rbd.pool, rbd::pool_base_name(local_name), [&] {
    for (const std::filesystem::path& directory : {host.cache.base_directory(), host.cache.lock_directory()}) {
      std::error_code error;
      std::filesystem::create_directories(directory, error);
      if (error) throw_io_error("cannot create " + directory.string(), error.value());
    }
    return make();
  }).location;
}

}  // namespace

RbdRoot check_rbd_boot(const Host& host, const glance::ImageRecord& image, bool has_kernel, const std::string& uuid) {
  const RbdHost& rbd = *host.rbd;
  if (has_kernel) {
    throw Error(ErrorCode::kInvalidArgument,
                "image " + image.id + " boots a kernel_id/ramdisk_id pair, which kiln does not boot from RBD yet");
  }
  if (image.disk_format == "iso") {
    throw Error(ErrorCode::kInvalidArgument,
                "image " + image.id + " is an ISO, which kiln does not boot from RBD yet (a blank root disk and a cdrom)");
  }
  RbdRoot root{glance_snapshot(rbd, image)};
  if (root.glance_snapshot) rbd.cluster->check_cloneable(*root.glance_snapshot);
  if (!host.libvirt.has_ceph_secret(rbd.secret_uuid)) {
    throw Error(ErrorCode::kConfigInvalid,
                "libvirt has no ceph secret " + rbd.secret_uuid + " (rbd_secret_uuid), which QEMU needs to open "
                "the instance's RBD disk: define it (virsh secret-define, usage type ceph) and set client." +
                    (rbd.user.empty() ? std::string("admin") : rbd.user) + "'s key (virsh secret-set-value)");
  }
  rbd::Pool pool = rbd.cluster->open_pool(rbd.pool);
  std::string disk = rbd::instance_image_name(uuid, layout::kRootDisk);
  if (pool.image_exists(disk)) {
    throw Error(ErrorCode::kInstanceExists, "RBD image " + rbd.pool + "/" + disk + " already exists");
  }
  return root;
}

RbdClones::~RbdClones() {
  if (kept_) return;
  try {
    rbd::Pool pool = rbd_.cluster->open_pool(rbd_.pool);
    for (auto it = images_.rbegin(); it != images_.rend(); ++it) {
      try {
        pool.remove(*it);
      } catch (const Error&) {
        // The boot's own failure is the one reported; the image stays for a delete.
      }
    }
  } catch (const Error&) {
    // Ceph unreachable: the images stay for a delete (which removes <uuid>_*).
  }
}

void build_rbd_disks(const BootRequest& request, const Host& host, const glance::ImageRecord& image,
                     const RbdRoot& root, const LocalBaseSource& root_base, const std::string& ephemeral_filesystem,
                     const InstanceDir& directory, virt::DomainSpec& spec, disk::DiskInfo& disk_info,
                     BootResult& result, RbdClones& made) {
  const RbdHost& rbd = *host.rbd;
  const std::string& uuid = directory.uuid();
  rbd::Location source;
  if (root.glance_snapshot) {
    source = *root.glance_snapshot;
  } else {
    rbd::PoolBase base =
        rbd::ensure_pool_base(*rbd.cluster, rbd.pool, rbd::pool_base_name(cache::base_name_for(image.id)), root_base);
    result.rbd_pool_base = base;
    source = base.location;
  }
  result.rbd_root = clone_disk(rbd, source, uuid, layout::kRootDisk, request.root_gb * kGiB, disk_info, made,
                               &result.root_bytes);
  spec.root_disk = network_disk(rbd, result.rbd_root->image);
  if (request.ephemeral_gb != 0) {
    rbd::Location base = scratch_base(host, disk::ephemeral_base_name(request.ephemeral_gb, ephemeral_filesystem), [&] {
      disk::EphemeralBase local = disk::ensure_ephemeral_base(host.cache.base_directory(), host.cache.lock_directory(),
                                                              request.ephemeral_gb, ephemeral_filesystem);
      return rbd::LocalFile{local.path, std::make_shared<FileLock>(std::move(local.lock)), {}};
    });
    result.rbd_ephemeral = clone_disk(rbd, base, uuid, layout::kEphemeralDisk, 0, disk_info, made, nullptr);
    spec.ephemeral_disk = network_disk(rbd, result.rbd_ephemeral->image);
  }
  if (request.swap_mb != 0) {
    rbd::Location base = scratch_base(host, disk::swap_base_name(request.swap_mb), [&] {
      disk::SwapBase local = disk::ensure_swap_base(host.cache.base_directory(), host.cache.lock_directory(),
                                                    request.swap_mb);
      return rbd::LocalFile{local.path, std::make_shared<FileLock>(std::move(local.lock)), {}};
    });
    result.rbd_swap = clone_disk(rbd, base, uuid, layout::kSwapDisk, 0, disk_info, made, nullptr);
    spec.swap_disk = network_disk(rbd, result.rbd_swap->image);
  }
}

}  // namespace kiln::instance
