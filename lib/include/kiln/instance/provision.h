// Provisioning and deleting instances: from a boot request to a defined (and
// running) libvirt domain, and back.
//
// provision() checks everything it can before touching anything (request,
// flavor, NICs, image record and properties), takes the instance's lock
// (locks/instance-<uuid>), gets the bases from the image cache, builds the
// instance directory (disk, disk.local, disk.swap, disk.info, console.log,
// libvirt.xml) under a temporary name (.<uuid>.building-XXXXXX,
// kiln/util/temporaries.h) with a provisioning marker that records each
// finished step, makes those files durable together, renames the directory
// to its uuid (never over an existing one) and fsyncs the instances path,
// defines the domain with exactly the bytes of libvirt.xml, starts it, and
// only then removes the marker (durably). So no crash leaves a directory
// under a uuid that is empty or half-built without a marker, and a marker
// always means "this boot never succeeded" (reconcile undoes it). Every file
// names the final paths, never the temporary ones. Images are booted as Nova
// boots them: a disk image becomes a qcow2 overlay on its base; an ISO is
// attached as a cdrom with a blank root disk; kernel_id/ramdisk_id images
// are fetched as raw files into _base and booted with <kernel>/<initrd>.
// Any failure undoes what was done: the domain is undefined and the
// directory removed; the cache is left as it is (a downloaded base stays
// cached). When the undefine itself fails (libvirt lost after the define, or
// during it, when libvirt may have defined it without kiln hearing so), the
// directory stays, its marker says "rollback_pending", and the boot fails
// with kRollbackIncomplete saying what libvirt did; reconcile finishes it.
// A domain whose disks are gone is never left behind.
// delete_instance() marks the directory as being deleted (.kiln-deleting),
// destroys and undefines the domain, moves the directory aside
// (.<uuid>.deleting-XXXXXX) and removes it; it is idempotent, and reconcile
// finishes a delete a crash cut short.
// Thread-safe for different uuids; a second provision of a uuid whose
// provision is running fails with kInstanceExists.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/image_cache.h"
#include "kiln/instance/instance_dir.h"
#include "kiln/rbd/cluster.h"
#include "kiln/rbd/pool_base.h"
#include "kiln/virt/connection.h"
#include "kiln/virt/domain_spec.h"
#include "kiln/virt/guest_start.h"

namespace kiln::instance {

struct BootRequest {
  std::string uuid;
  std::string name;  // display name only (<title>, metadata); the domain name comes from Host::name_template
  std::string image_id;
  unsigned vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint64_t root_gb = 0;  // GiB; 0 means the image's virtual size
  std::uint64_t swap_mb = 0;  // MiB; 0 means no swap disk
  std::uint64_t ephemeral_gb = 0;  // GiB; 0 means no disk.local
  std::vector<virt::NetworkInterface> nics;
  bool start = true;
  // Glance's record of image_id as the controller has it (nova passes
  // image_meta with a boot): a warm boot from it asks Glance nothing
  // (cache::ImageCache::lookup(offered) says when it is used).
  std::optional<glance::ImageRecord> image;
  // When the request was accepted (kilnd's POST, kilnctl's start), for the
  // image lookups (cache::ImageCache::lookup): a record Glance gave after
  // this is fresh enough. Not part of the JSON; nullopt: when looked up.
  std::optional<std::chrono::steady_clock::time_point> received_at;
};

// The boot request as schemas/boot-request.schema.json has it (flavor
// fields under "flavor", "name" left out when empty): kilnd's POST
// /v1/instances body, kilnctl's request to it, the provisioning marker's
// first line. from_json reads the fields and checks nothing: a request from
// outside goes through kiln::rpc::parse_boot_request (kiln/rpc/wire.h),
// which validates it first.
void to_json(nlohmann::json& out, const BootRequest& request);
void from_json(const nlohmann::json& in, BootRequest& request);

// [libvirt] images_type = rbd: the instance's root disk is a clone, in
// `pool`, of the protected snapshot Glance's RBD store keeps the image in,
// and QEMU opens it as `user` with the libvirt ceph secret `secret_uuid`.
struct RbdHost {
  std::shared_ptr<const rbd::Cluster> cluster;  // the process's (rbd::shared_cluster)
  std::string pool;         // nova's images_rbd_pool
  std::string user;         // nova's rbd_user; "" = admin
  std::string secret_uuid;  // nova's rbd_secret_uuid, canonical
  std::vector<rbd::Monitor> monitors;  // of images_rbd_ceph_conf (rbd::conf_monitors)
};

struct Host {
  std::filesystem::path instances_path;  // absolute
  const cache::ImageCache& cache;
  virt::Connection& libvirt;
  std::string virt_type;  // "kvm", "qemu", or "" to choose (virt/virt_type.h)
  virt::StartPolicy start{};  // how a started domain is confirmed running
  // nova's [DEFAULT] instance_name_template (virt::domain_name_from_template); "" = instance-<uuid>.
  std::string name_template{};
  // nova's [DEFAULT] default_ephemeral_format; "" = by os_type (disk::ephemeral_filesystem_for).
  std::string ephemeral_format{};
  // The file= mode of nova's [libvirt] disk_cachemodes; "" or "default" = none
  // where the instances path takes O_DIRECT, else writeback.
  std::string cache_mode{};
  // Set: disks in Ceph (provision_rbd's rules below); nullptr: qcow2 files.
  const RbdHost* rbd = nullptr;
  // Taken before a download provision() makes itself (images_type = rbd: the
  // image of a pool base, not cached here) and held until it ends, as
  // kiln/rpc/steps.h's StepHooks::download_slot; nullptr: no limit.
  std::function<std::shared_ptr<void>()> download_slot{};
};

// An instance disk in Ceph: a clone of a protected snapshot.
struct RbdDisk {
  std::string image;   // "<pool>/<name>"
  std::string parent;  // "<pool>/<image>@<snapshot>"
};

struct BootResult {
  InstanceDir directory;
  cache::BaseImage base;
  std::optional<std::filesystem::path> swap_base;
  std::optional<std::filesystem::path> ephemeral_base;
  std::uint64_t root_bytes = 0;
  std::string domain_name;
  std::string domain_type;
  std::string domain_state;
  // images_type = rbd: each disk's image ("<pool>/<uuid>_disk", ...) and the
  // snapshot it is a clone of ("<pool>/<image>@<snap>"): Glance's, or a kiln
  // pool base's. `base` is then set only when this boot downloaded the image
  // to write its pool base (rbd_pool_base->imported).
  std::optional<RbdDisk> rbd_root{};
  std::optional<RbdDisk> rbd_swap{};
  std::optional<RbdDisk> rbd_ephemeral{};
  // The root's pool base, when it is a clone of one: found, or written by
  // this boot (with what the import cost).
  std::optional<rbd::PoolBase> rbd_pool_base{};
};

// What kilnctl --json prints and kilnd's boot operation returns as its result.
nlohmann::json to_json(const BootResult& result);

// What Glance says about the image against the flavor's root disk, before
// any byte is fetched: its virtual size and min_disk must fit in root_gb
// (root_gb 0: the disk takes the image's size, as in nova). ISOs boot a blank
// root disk and are not measured. Throws kiln::Error kFlavorDiskTooSmall.
void check_root_fits(std::uint64_t root_gb, const glance::ImageRecord& image);

// With host.rbd set every disk is a clone in the pool (kiln/rbd/pool_base.h,
// lib/instance/rbd_disks.h), and the image is always asked of Glance (an
// offered record is not trusted with the location that is cloned). A raw
// image with an rbd:// location (direct_url or locations) in host.rbd's
// cluster is cloned from Glance's snapshot, which must be protected: nothing
// is downloaded. Any other image is cloned from kiln's pool base of it
// (kiln-base-<sha1 of the id>), which the first boot in the cluster
// downloads through the cache, verifies and writes once; swap and ephemeral
// disks are clones of pool bases made from the local swap/ephemeral bases.
// The root clone is grown to root_gb. The instance directory holds no disk:
// console.log, disk.info ({"rbd:<pool>/<uuid>_disk": "raw", ...}) and
// libvirt.xml (network disks). Refused before anything is created: ISO and
// kernel_id / ramdisk_id images (kInvalidArgument: not in RBD yet), an
// unprotected or missing snapshot of Glance's (kRbdSnapshotUnprotected,
// kNotFound), a libvirt without the ceph secret (kConfigInvalid), an
// existing <uuid>_disk (kInstanceExists: it may hold an evacuated
// instance's data, so it is never taken over; a delete removes it). A failed
// boot removes its clones, except when a rollback stays pending (the domain
// may still use them); pool bases stay.
// Throws kiln::Error (kInvalidUuid, kInvalidArgument, kInstanceExists,
// kFlavorDiskTooSmall, kLibvirtError, kDomainStartFailed, kRollbackIncomplete
// and every ImageCache::acquire error).
// `progress` (may be null) sees the download, if one is needed.
BootResult provision(const BootRequest& request, const Host& host,
                     const cache::FetchProgress& progress = nullptr);

struct DeleteResult {
  std::string uuid;  // canonical
  bool domain_found = false;
  bool directory_found = false;
  std::vector<std::string> rbd_images{};  // the <uuid>_* images removed from the pool (images_type = rbd)
};

// {"uuid", "domain_found", "directory_found"}: kilnctl delete --json and
// kilnd's delete operation result.
void to_json(nlohmann::json& out, const DeleteResult& result);

// Destroys and undefines the domain with this uuid, if any, then with `rbd`
// removes the pool's <uuid>_* images (a failure there keeps the directory,
// marked, for a retry), and removes the instance directory, if any. Bases
// stay in the cache; Glance's RBD images are never touched.
DeleteResult delete_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                             virt::Connection& libvirt, const RbdHost* rbd = nullptr);

}  // namespace kiln::instance
