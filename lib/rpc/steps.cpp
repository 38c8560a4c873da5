#include "kiln/rpc/steps.h"

#include <filesystem>

#include "kiln/util/error.h"
#include "kiln/util/layout.h"
#include "kiln/util/uuid.h"

namespace kiln::rpc {

namespace {
void say(const StepHooks& hooks, const std::string& step) {
  if (hooks.step) hooks.step(step);
}
}  // namespace

std::optional<cache::BaseImage> fetch_base(const cache::ImageCache& cache, const std::string& image_id,
                                           std::optional<std::uint64_t> root_gb,
                                           std::optional<std::chrono::steady_clock::time_point> received_at,
                                           const StepHooks& hooks) {
  // A cached base needs no download slot; provision() still asks Glance
  // about the image, so a warm boot asks once, not twice.
  std::error_code error;
  bool cached = std::filesystem::exists(cache.base_directory() / cache::base_name_for(image_id), error);
  if (cached && root_gb) return std::nullopt;
  say(hooks, "looking up the image");
  auto record = cache.lookup(image_id, received_at);
  // As provision() does, and before the download: an image the flavor cannot
  // hold must not make room in the cache, or take a download slot, for nothing.
  if (root_gb) instance::check_root_fits(*root_gb, record);
  std::shared_ptr<void> slot;
  if (!cached && hooks.download_slot) {
    say(hooks, "waiting for a download slot");
    slot = hooks.download_slot();
  }
  say(hooks, "fetching the image");
  return cache.acquire(record, hooks.progress).base;
}

void refuse_existing_instance(const std::filesystem::path& instances_path, const std::string& uuid) {
  std::error_code error;
  if (std::filesystem::exists(layout::instance_directory(instances_path, uuid), error)) {
    throw Error(ErrorCode::kInstanceExists, "instance " + uuid + " already exists on this host");
  }
}

instance::BootResult boot(const instance::BootRequest& request, const cache::ImageCache& cache,
                          const StepHooks& hooks, const std::function<instance::BootResult()>& build, bool rbd) {
  std::optional<cache::BaseImage> fetched;
  if (!rbd) fetched = fetch_base(cache, request.image_id, request.root_gb, request.received_at, hooks);
  say(hooks, "building the instance");
  auto result = build();
  // The download happened above, not in provision(): the result says what
  // this boot fetched.
  if (fetched) {
    result.base.downloaded_bytes += fetched->downloaded_bytes;
    result.base.resumes += fetched->resumes;
    result.base.phases = fetched->phases;
  }
  return result;
}

std::optional<instance::RbdHost> rbd_host(const config::Settings& settings) {
  const config::RbdSettings& rbd = settings.rbd;
  if (!rbd.enabled) return std::nullopt;
  rbd::ConnectOptions options;
  options.ceph_conf = rbd.ceph_conf;
  options.user = rbd.user;
  options.connect_timeout = rbd.connect_timeout;
  return instance::RbdHost{rbd::shared_cluster(options), rbd.pool, rbd.user, rbd.secret_uuid,
                           rbd::conf_monitors(rbd.ceph_conf)};
}

std::optional<std::vector<rbd::PoolBaseInfo>> list_pool_bases(const config::Settings& settings) {
  auto rbd = rbd_host(settings);
  if (!rbd) return std::nullopt;
  return rbd::list_pool_bases(rbd->cluster->open_pool(rbd->pool));
}

std::optional<std::vector<rbd::PoolBasePrune>> prune_pool_bases(const config::Settings& settings,
                                                                cache::Clock::time_point now, bool dry_run) {
  auto rbd = rbd_host(settings);
  if (!rbd) return std::nullopt;
  rbd::Pool pool = rbd->cluster->open_pool(rbd->pool);
  auto listed = rbd::list_pool_bases(pool);
  if (!dry_run) rbd::mark_pool_bases_in_use(pool, listed, now);
  if (!settings.cache.remove_unused_base_images) return std::vector<rbd::PoolBasePrune>{};
  return rbd::prune_pool_bases(pool, listed, settings.cache.unused_minimum_age, now, dry_run);
}

instance::DeleteResult delete_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                                       const instance::ConnectLibvirt& connect, const StepHooks& hooks,
                                       const instance::RbdHost* rbd) {
  std::string canonical = normalize_uuid(uuid);
  say(hooks, rbd ? "destroying and undefining the domain, removing its RBD images and the directory"
                 : "destroying and undefining the domain, removing the directory");
  return instance::delete_instance(canonical, instances_path, connect(), rbd);
}

instance::ReconcileReport reconcile(const config::Settings& settings, const std::filesystem::path& instances_path,
                                    virt::Connection& libvirt, bool dry_run) {
  std::optional<instance::RbdHost> rbd;
  std::string unreachable;
  try {
    rbd = rbd_host(settings);
    if (rbd) return instance::reconcile(instances_path, libvirt, dry_run, &*rbd);
  } catch (const Error& error) {
    if (error.code() != ErrorCode::kRbdError) throw;
    unreachable = error.what();  // a reconcile that changed something before it is safe to run again
  }
  instance::ReconcileReport report = instance::reconcile(instances_path, libvirt, dry_run);
  if (!unreachable.empty()) {
    report.findings.push_back({"", "rbd_not_checked",
                               "the pool's RBD images were not reconciled: " + unreachable, false});
  }
  return report;
}

instance::InstanceReport show_instance(const config::Settings& settings, const std::string& uuid,
                                       const std::filesystem::path& instances_path,
                                       const instance::ConnectLibvirt& connect) {
  std::string unreachable;
  try {
    auto rbd = rbd_host(settings);
    if (rbd) return instance::survey_instance(uuid, instances_path, connect, &*rbd);
  } catch (const Error& error) {
    if (error.code() != ErrorCode::kRbdError) throw;
    unreachable = error.what();
  }
  instance::InstanceReport report = instance::survey_instance(uuid, instances_path, connect);
  if (!unreachable.empty()) report.rbd_unreachable = unreachable;
  return report;
}

instance::DiskUsage disk_usage(const config::Settings& settings, const std::filesystem::path& instances_path) {
  std::string unreachable;
  try {
    auto rbd = rbd_host(settings);
    if (rbd) return instance::disk_usage(instances_path, &*rbd);
  } catch (const Error& error) {
    if (error.code() != ErrorCode::kRbdError) throw;
    unreachable = error.what();
  }
  instance::DiskUsage usage = instance::disk_usage(instances_path);
  if (!unreachable.empty()) usage.rbd_unreachable = unreachable;
  return usage;
}

}  // namespace kiln::rpc
