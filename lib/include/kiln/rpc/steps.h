// The steps of a boot, a pre-cache and a delete, run the same way whether
// kilnd runs them as an operation or kilnctl works directly: the same Glance
// lookups, the same check of the image against the flavor before any byte
// is fetched, the same step names. A failure then names the same step on
// both paths (the error envelope's "step", kiln/rpc/wire.h), and the result
// says the same about what was downloaded.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kiln/cache/base_info.h"
#include "kiln/cache/image_cache.h"
#include "kiln/config/settings.h"
#include "kiln/instance/disk_usage.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/provision.h"
#include "kiln/instance/reconcile.h"
#include "kiln/rbd/pool_base.h"

namespace kiln::rpc {

// What the caller does as the steps go: kilnd records them on the operation
// and takes one of its download slots; kilnctl notes the step for its error
// envelope, shows a progress bar and takes no slot.
struct StepHooks {
  std::function<void(const std::string& step)> step;
  cache::FetchProgress progress;
  // Called before an image that is not cached yet is fetched; the download
  // holds what it returns until it ends. nullptr: no slots.
  std::function<std::shared_ptr<void>()> download_slot;
};

// Looks the image up ("looking up the image"), then fetches its base
// ("waiting for a download slot" when not cached, "fetching the image").
// With a flavor's root_gb (a boot) the image is measured against it first
// (kFlavorDiskTooSmall before any byte), and a base already cached is left
// to provision() (which asks Glance once): nullopt. Without one (a
// pre-cache), returns the base as `cache fetch` reports it, cached or not.
// `received_at`: when the request was accepted (cache::ImageCache::lookup),
// so that provision() finds the record looked up here fresh enough and a
// cold boot asks Glance once.
std::optional<cache::BaseImage> fetch_base(const cache::ImageCache& cache, const std::string& image_id,
                                           std::optional<std::uint64_t> root_gb,
                                           std::optional<std::chrono::steady_clock::time_point> received_at,
                                           const StepHooks& hooks);

// Throws kInstanceExists when `uuid` has a directory under instances_path:
// checked before a boot starts (kilnd before it answers 202), not found
// half-way in.
void refuse_existing_instance(const std::filesystem::path& instances_path, const std::string& uuid);

// A boot: fetch_base with the flavor's root_gb, then "building the
// instance": `build` (provision() on the caller's Host, with
// hooks.progress). The result's base counts what fetch_base downloaded too.
// With `rbd` (images_type = rbd) nothing is fetched here: provision() clones,
// and fetches only an image the pool has no base of yet (without a download slot).
instance::BootResult boot(const instance::BootRequest& request, const cache::ImageCache& cache,
                          const StepHooks& hooks, const std::function<instance::BootResult()>& build,
                          bool rbd = false);

// images_type = rbd: what a Host needs to put disks in Ceph, from the
// settings: the process's connection to the cluster (rbd::shared_cluster,
// bounded by rbd_connect_timeout), the pool, the user, the secret and the
// monitors of images_rbd_ceph_conf. nullopt when images_type is not rbd.
// Throws kRbdError when the cluster cannot be reached or the conf read.
std::optional<instance::RbdHost> rbd_host(const config::Settings& settings);

// images_type = rbd: the pool bases of images_rbd_pool (rbd::list_pool_bases)
// that `cache ls` and GET /v1/cache show beside _base; nullopt when
// images_type is not rbd. Throws kRbdError when the cluster cannot be reached.
std::optional<std::vector<rbd::PoolBaseInfo>> list_pool_bases(const config::Settings& settings);

// images_type = rbd: `cache prune`'s and kilnd's cache manager's share of
// the pool. Unless `dry_run`, every base with clones is marked used now
// (rbd::mark_pool_bases_in_use); then rbd::prune_pool_bases under the
// cache's aging: no clones and no import or use for longer than
// unused_minimum_age; nothing when remove_unused_base_images is false (nova's
// switch, as for _base). nullopt when images_type is not rbd. Throws
// kRbdError when the cluster cannot be reached (before anything is removed).
std::optional<std::vector<rbd::PoolBasePrune>> prune_pool_bases(const config::Settings& settings,
                                                                cache::Clock::time_point now, bool dry_run);

// A delete: the uuid checked (kInvalidUuid before any step), then
// "destroying and undefining the domain, removing the directory" (and with
// `rbd`, the instance's images in the pool).
instance::DeleteResult delete_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                                       const instance::ConnectLibvirt& connect, const StepHooks& hooks,
                                       const instance::RbdHost* rbd = nullptr);

// instance::reconcile() with the pool's RBD images too when images_type =
// rbd. When Ceph cannot be reached the directories and domains are
// reconciled alone, and a finding of kind "rbd_not_checked" says why: kilnd
// still starts.
instance::ReconcileReport reconcile(const config::Settings& settings, const std::filesystem::path& instances_path,
                                    virt::Connection& libvirt, bool dry_run);

// instance::survey_instance() with the instance's RBD disks and their clone
// chains when images_type = rbd: `kilnctl instance show` and kilnd's GET
// /v1/instances/<uuid> answer through it. When Ceph cannot be reached the
// report has the directory's disks only and rbd_unreachable says why.
instance::InstanceReport show_instance(const config::Settings& settings, const std::string& uuid,
                                       const std::filesystem::path& instances_path,
                                       const instance::ConnectLibvirt& connect);

// instance::disk_usage() with the pool's bytes when images_type = rbd (`kilnctl
// du`); when Ceph cannot be reached, the host's bytes alone and
// rbd_unreachable says why.
instance::DiskUsage disk_usage(const config::Settings& settings, const std::filesystem::path& instances_path);

}  // namespace kiln::rpc
