#include "kiln/instance/provision.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>  // renameat2
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kiln/cache/maintenance.h"
#include "kiln/disk/disk_info.h"
#include "kiln/disk/ephemeral.h"
#include "kiln/util/text.h"
#include "kiln/disk/overlay.h"
#include "kiln/disk/swap.h"
#include "kiln/image/inspector.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/rbd/location.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"
#include "kiln/util/subprocess.h"
#include "kiln/util/temporaries.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/image_properties.h"
#include "kiln/virt/virt_type.h"
#include "provisioning_marker.h"
#include "rbd_disks.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;
// Far above any real flavor; keeps size arithmetic from overflowing.
constexpr std::uint64_t kMaxRootGb = 1024 * 1024;
constexpr std::uint64_t kMaxSwapMb = 1024 * 1024;
constexpr std::uint64_t kMaxMemoryMb = 64 * 1024 * 1024;
constexpr unsigned kMaxVcpus = 4096;

[[noreturn]] void invalid(const std::string& what) { throw Error(ErrorCode::kInvalidArgument, what); }

// The request's name is only the display name (<title> and kiln's metadata):
// display names repeat in a cloud, so the domain name is kiln's own, made
// from the uuid (nova's instance_name_template).
void check_display_name(const std::string& name) {
  if (name.size() > 255) invalid("name is longer than 255 bytes");
  if (!is_utf8(name)) invalid("name is not valid UTF-8");
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) invalid("name has a control character");
  }
}

std::string domain_name_for(const Host& host, const std::string& uuid) {
  try {
    return virt::domain_name_from_template(
        host.name_template.empty() ? virt::kDefaultInstanceNameTemplate : host.name_template, uuid);
  } catch (const Error& error) {
    throw Error(ErrorCode::kConfigInvalid, error.what());
  }
}

void check_flavor(const BootRequest& request) {
  if (request.vcpus == 0 || request.vcpus > kMaxVcpus) invalid("vcpus must be between 1 and 4096");
  if (request.memory_mb == 0 || request.memory_mb > kMaxMemoryMb) invalid("memory_mb must be between 1 and 67108864");
  if (request.root_gb > kMaxRootGb) invalid("root_gb must be at most 1048576");
  if (request.swap_mb > kMaxSwapMb) invalid("swap_mb must be at most 1048576");
  if (request.ephemeral_gb > disk::kMaxEphemeralGb) invalid("ephemeral_gb is too large");
  for (const auto& nic : request.nics) virt::check_network_interface(nic);
}

// Root disk size in bytes: the flavor's, never smaller than the image's
// virtual size (checked against Glance's figure before downloading, and
// against the real base afterwards).
std::uint64_t root_size(const BootRequest& request, const std::string& image_id,
                        std::uint64_t image_virtual_size) {
  if (request.root_gb == 0) return image_virtual_size;
  std::uint64_t bytes = request.root_gb * kGiB;
  if (bytes < image_virtual_size) {
    throw Error(ErrorCode::kFlavorDiskTooSmall,
                "root disk of " + std::to_string(request.root_gb) + " GiB is smaller than image " +
                    image_id + " (" + std::to_string(image_virtual_size) + " bytes virtual size)");
  }
  return bytes;
}

}  // namespace

void check_root_fits(std::uint64_t root_gb, const glance::ImageRecord& image) {
  if (root_gb == 0 || image.disk_format == "iso") return;
  if (image.min_disk > root_gb) {
    throw Error(ErrorCode::kFlavorDiskTooSmall, "root disk of " + std::to_string(root_gb) +
                                                    " GiB is smaller than image " + image.id + "'s min_disk of " +
                                                    std::to_string(image.min_disk) + " GiB");
  }
  BootRequest flavor;
  flavor.root_gb = root_gb;
  if (image.virtual_size) root_size(flavor, image.id, *image.virtual_size);
}

namespace {

// Whether the instances path takes O_DIRECT, probed once per process and path
// as nova's disk_cachemode is: a probe creates, writes and unlinks a file
// (milliseconds of journal on a busy disk) and its answer does not change
// while the filesystem stays mounted.
bool instances_take_direct_io(const fs::path& instances_path) {
  static std::mutex mutex;
  static std::map<std::string, bool> probed;
  std::lock_guard lock(mutex);
  auto [it, first] = probed.try_emplace(instances_path.lexically_normal().string(), false);
  if (first) it->second = supports_direct_io(instances_path);
  return it->second;
}

void check_absent(const InstanceDir& directory, virt::Connection& libvirt) {
  std::error_code error;
  if (fs::exists(directory.path(), error)) {
    throw Error(ErrorCode::kInstanceExists, "instance " + directory.uuid() + " already exists at " +
                                                directory.path().string());
  }
  if (libvirt.lookup_by_uuid(directory.uuid())) {
    throw Error(ErrorCode::kInstanceExists,
                "libvirt already has a domain with uuid " + directory.uuid());
  }
}

// Everything Glance must say before any byte is fetched: the image and the
// kernel/ramdisk images it names.
struct Images {
  glance::ImageRecord root;
  std::optional<glance::ImageRecord> kernel;
  std::optional<glance::ImageRecord> ramdisk;
  bool is_iso() const { return root.disk_format == "iso"; }
};

Images look_up_images(const BootRequest& request, const cache::ImageCache& cache) {
  auto received_at = request.received_at;
  Images images{request.image ? cache.lookup(*request.image, received_at) : cache.lookup(request.image_id, received_at),
                std::nullopt, std::nullopt};
  const auto& properties = images.root.properties;
  if (auto it = properties.find("kernel_id"); it != properties.end()) {
    images.kernel = cache.lookup(it->second, received_at);
  }
  if (auto it = properties.find("ramdisk_id"); it != properties.end()) {
    images.ramdisk = cache.lookup(it->second, received_at);
  }
  if (images.is_iso() && request.root_gb == 0) {
    invalid("image " + images.root.id + " is an ISO: the flavor needs root_gb > 0 for the blank root disk");
  }
  check_root_fits(request.root_gb, images.root);
  return images;
}

// The guest as far as it is known before anything is built; image
// properties are checked here, so a bad one refuses the boot up front.
virt::DomainSpec initial_spec(const BootRequest& request, const InstanceDir& directory,
                              const std::string& name, const std::string& domain_type,
                              const Images& images) {
  virt::DomainSpec spec;
  spec.domain_type = domain_type;
  spec.name = name;
  spec.uuid = directory.uuid();
  spec.memory_mb = request.memory_mb;
  spec.vcpus = request.vcpus;
  spec.interfaces = request.nics;
  spec.console_log = directory.console_log().string();
  spec.image_id = images.root.id;
  spec.display_name = request.name.empty() ? name : request.name;
  virt::apply_image_properties(images.root.properties, spec);
  if (spec.firmware == "uefi") spec.nvram_path = directory.nvram().string();
  return spec;
}

// The instance's lock (kiln/util/temporaries.h), held from before its
// directory is built until the boot has finished; the lock file goes with it.
class InstanceLock {
 public:
  InstanceLock(const fs::path& instances_path, const std::string& uuid) {
    fs::path path = layout::instance_lock_path(instances_path, uuid);
    auto lock = FileLock::try_lock(path);
    if (!lock) {
      throw Error(ErrorCode::kInstanceExists,
                  "instance " + uuid + " is being provisioned by " + lock_holder(path) + " right now");
    }
    lock_.emplace(std::move(*lock));
  }
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock() { lock_->unlink_locked(); }

 private:
  std::optional<FileLock> lock_;
};

// Creates the directory the instance is built in, under a temporary name
// next to its final one; the returned guard removes it (and all it will
// hold) unless the boot succeeds. 0755 as nova's: QEMU (another user) must
// traverse it to the disks.
TemporaryPath create_building_directory(const fs::path& instances_path, const std::string& uuid) {
  std::string name = layout::building_template(instances_path, uuid);
  KILN_FAILPOINT("boot.building.before_mkdir");
  if (::mkdtemp(name.data()) == nullptr) throw_io_error("cannot create a directory in " + instances_path.string(), errno);
  TemporaryPath guard{fs::path(name)};
  if (::chmod(name.c_str(), 0755) != 0) throw_io_error("cannot chmod " + name, errno);
  KILN_FAILPOINT("boot.building.created");
  return guard;
}

// Renames the built directory to its uuid, never over an existing one, and
// makes the rename durable: the directory appears whole or not at all.
TemporaryPath publish_directory(TemporaryPath& building, const InstanceDir& directory) {
  if (::renameat2(AT_FDCWD, building.path().c_str(), AT_FDCWD, directory.path().c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      throw Error(ErrorCode::kInstanceExists, "instance " + directory.uuid() + " already exists at " +
                                                  directory.path().string());
    }
    throw_io_error("cannot rename " + building.path().string() + " to " + directory.path().string(), errno);
  }
  building.keep();
  TemporaryPath published(directory.path());
  KILN_FAILPOINT("boot.directory.renamed");
  fsync_directory(directory.path().parent_path());
  return published;
}

ProvisioningMarker create_marker(const InstanceDir& directory, const BootRequest& request) {
  KILN_FAILPOINT("boot.marker.before_create");
  nlohmann::json marker = request;
  marker["uuid"] = directory.uuid();
  return ProvisioningMarker(directory.provisioning_marker(), marker.dump());
}

// A base is inspected again before every use: safety rules may have been
// added since it was fetched, and the file may have been tampered with. A
// converted base must now be raw; ISO and kernel images keep their format.
void require_safe_base(const cache::BaseImage& base, const cache::CachePolicy& policy) {
  const std::string& disk_format = base.record.disk_format;
  bool kept_as_is = disk_format == "iso" || disk_format == "aki" || disk_format == "ari" || disk_format == "ami";
  image::require_safe(image::inspect_file(base.path, policy.inspector), kept_as_is ? disk_format : "raw",
                      base.record.id + " (cached base " + base.path.filename().string() + ")");
}

// The locks of the bases the instance's disks are made on, held until the
// directory is in place under its uuid: before that, a prune's scan of the
// instances path could miss the overlays (readdir need not see a directory
// being renamed) and take a base they are made on.
using HeldBases = std::vector<std::shared_ptr<void>>;

// Root disk: an overlay on the image's base, or for an ISO a blank disk with
// the ISO's base attached as a cdrom. The base's lock is held (`held`) until
// the directory is published, so it cannot be pruned or replaced in between.
// `directory` names the files as the domain will see them; `staging` is where
// they are made until the directory is renamed into place.
cache::BaseImage build_root(const BootRequest& request, const Host& host, const Images& images,
                            const InstanceDir& directory, const InstanceDir& staging,
                            const cache::FetchProgress& progress, virt::DomainSpec& spec,
                            std::uint64_t& root_bytes, HeldBases& held) {
  KILN_FAILPOINT("boot.root.before_acquire");
  cache::BaseLease lease = host.cache.acquire(images.root, progress);
  held.push_back(lease.lock);
  KILN_FAILPOINT("boot.root.base_acquired");
  require_safe_base(lease.base, host.cache.policy());
  if (images.is_iso()) {
    root_bytes = request.root_gb * kGiB;
    disk::create_blank_qcow2(staging.disk(), root_bytes);  // qemu-img, in kiln's sandbox
    spec.cdrom_images.push_back(lease.base.path.string());
    spec.boot_from_cdrom = true;
  } else {
    root_bytes = root_size(request, images.root.id, lease.base.virtual_size);
    // The backing file is the base's absolute path: the same wherever the overlay is built.
    disk::create_overlay(staging.disk(), lease.base.path, root_bytes, disk::OverlayWriter::kNative,
                         Durability::kCallerSyncs);
  }
  KILN_FAILPOINT("boot.root.overlay_created");
  spec.root_disk = virt::DiskFile{directory.disk().string(), "qcow2", std::nullopt};
  return lease.base;
}

// kernel_id / ramdisk_id images: raw files in _base, booted directly.
void fetch_kernel(const Host& host, const Images& images, virt::DomainSpec& spec, HeldBases& held) {
  if (!images.kernel) return;
  cache::BaseLease kernel = host.cache.acquire(*images.kernel);
  held.push_back(kernel.lock);
  require_safe_base(kernel.base, host.cache.policy());
  spec.kernel_path = kernel.base.path.string();
  if (!images.ramdisk) return;
  cache::BaseLease ramdisk = host.cache.acquire(*images.ramdisk);
  held.push_back(ramdisk.lock);
  require_safe_base(ramdisk.base, host.cache.policy());
  spec.initrd_path = ramdisk.base.path.string();
}

// nova's choice: default_ephemeral_format when set, else by the image's
// os_type property, and vfat when it has none (disk::ephemeral_filesystem_for).
std::string ephemeral_filesystem(const Host& host, const Images& images) {
  if (!host.ephemeral_format.empty()) return host.ephemeral_format;
  auto os_type = images.root.properties.find("os_type");
  return disk::ephemeral_filesystem_for(os_type == images.root.properties.end() ? "" : os_type->second);
}

std::optional<fs::path> build_ephemeral(const BootRequest& request, const Host& host, const Images& images,
                                        const InstanceDir& directory, const InstanceDir& staging,
                                        virt::DomainSpec& spec, disk::DiskInfo& disk_info, HeldBases& held) {
  if (request.ephemeral_gb == 0) return std::nullopt;
  KILN_FAILPOINT("boot.ephemeral.before_base");
  disk::EphemeralBase base = disk::ensure_ephemeral_base(host.cache.base_directory(), host.cache.lock_directory(),
                                                         request.ephemeral_gb,
                                                         ephemeral_filesystem(host, images));
  held.push_back(std::make_shared<FileLock>(std::move(base.lock)));
  cache::touch_base(base.path);
  KILN_FAILPOINT("boot.ephemeral.base_ready");
  disk::create_overlay(staging.ephemeral_disk(), base.path, base.size_bytes, disk::OverlayWriter::kNative,
                       Durability::kCallerSyncs);
  KILN_FAILPOINT("boot.ephemeral.overlay_created");
  disk_info.add(directory.ephemeral_disk(), "qcow2");
  spec.ephemeral_disk = virt::DiskFile{directory.ephemeral_disk().string(), "qcow2", std::nullopt};
  return base.path;
}

std::optional<fs::path> build_swap(const BootRequest& request, const Host& host, const InstanceDir& directory,
                                   const InstanceDir& staging, virt::DomainSpec& spec, disk::DiskInfo& disk_info,
                                   HeldBases& held) {
  if (request.swap_mb == 0) return std::nullopt;
  KILN_FAILPOINT("boot.swap.before_base");
  disk::SwapBase base = disk::ensure_swap_base(host.cache.base_directory(), host.cache.lock_directory(),
                                               request.swap_mb);
  held.push_back(std::make_shared<FileLock>(std::move(base.lock)));
  cache::touch_base(base.path);
  KILN_FAILPOINT("boot.swap.base_ready");
  disk::create_overlay(staging.swap_disk(), base.path, base.size_bytes, disk::OverlayWriter::kNative,
                       Durability::kCallerSyncs);
  KILN_FAILPOINT("boot.swap.overlay_created");
  disk_info.add(directory.swap_disk(), "qcow2");
  spec.swap_disk = virt::DiskFile{directory.swap_disk().string(), "qcow2", std::nullopt};
  return base.path;
}

void create_console_log(const InstanceDir& directory) {
  open_file(directory.console_log(), O_WRONLY | O_CREAT | O_APPEND, 0644);
}

// The instance's files and the directory itself, for one fsync_together().
std::vector<fs::path> files_of(const InstanceDir& directory) {
  std::vector<fs::path> files{directory.path()};
  for (const auto& entry : fs::directory_iterator(directory.path())) {
    if (entry.path() != directory.provisioning_marker()) files.push_back(entry.path());
  }
  return files;
}

// What undoing a definition came to, in words for the error message.
struct Undo {
  bool done = false;
  std::string what;  // "undefined it again", or why it could not be
};

// Powers off and undefines the domain with `uuid` if libvirt has it: on the
// boot's connection, or on a new one when that connection is dead (a
// restarted libvirtd answers a new connection).
Undo undefine_again(virt::Connection& libvirt, const std::string& uuid) {
  std::string failure;
  for (bool fresh_connection : {false, true}) {
    if (fresh_connection && libvirt.is_alive()) break;  // the live connection's answer stands
    try {
      std::optional<virt::Connection> reopened;
      virt::Connection* connection = &libvirt;
      if (fresh_connection) connection = &reopened.emplace(libvirt.uri());
      KILN_FAILPOINT("boot.rollback.before_undefine");
      auto domain = connection->lookup_by_uuid(uuid);
      if (!domain) return {true, "libvirt has no domain with uuid " + uuid + ", so nothing is left defined"};
      if (domain->is_active()) domain->destroy();
      domain->undefine();
      return {true, "kiln undefined the domain again"};
    } catch (const Error& error) {
      failure = error.what();
    }
  }
  return {false, failure};
}

// A boot failed at or after its definition: undoes the definition and
// rethrows, so the caller's guard removes the directory. Should libvirt be out
// of reach, the domain may stay defined, so its disks must stay too: the
// directory is kept with its marker saying a rollback is pending, and the
// boot fails with kRollbackIncomplete saying what libvirt did.
[[noreturn]] void undo_definition(const Host& host, const InstanceDir& directory, bool defined,
                                  ProvisioningMarker& marker, TemporaryPath& directory_guard,
                                  const Error& failure) {
  if (!defined && host.libvirt.is_alive()) throw failure;  // libvirt refused it: nothing is defined
  std::string what_happened = defined ? "libvirt accepted the definition of domain " + directory.uuid() +
                                            ", then the boot failed: " + failure.what()
                                      : std::string(failure.what());
  Undo undo = undefine_again(host.libvirt, directory.uuid());
  if (undo.done) throw Error(failure.code(), what_happened + "; " + undo.what);
  std::string why = "undefining the domain failed: " + undo.what;
  marker.record(kRollbackPending, why);
  marker.sync();
  KILN_FAILPOINT("boot.rollback.pending_recorded");
  directory_guard.keep();
  throw Error(ErrorCode::kRollbackIncomplete,
              what_happened + "; " + why + ". The instance directory " + directory.path().string() +
                  " is kept (the domain may still use its disks) and marked for `kilnctl instance reconcile` "
                  "(kilnd runs it at start), which undefines the domain if libvirt has it and removes the "
                  "directory; then the boot can be retried");
}

// images_type = rbd: the image's verified raw base from the host's cache,
// for the pool base the first boot of the image in the cluster writes. The
// result counts the download.
LocalBaseSource verified_base(const Host& host, const glance::ImageRecord& image,
                              const cache::FetchProgress& progress, BootResult& result) {
  return [&host, &image, &progress, &result] {
    std::shared_ptr<void> slot;
    std::error_code error;
    if (host.download_slot && !fs::exists(host.cache.base_directory() / cache::base_name_for(image.id), error)) {
      slot = host.download_slot();
    }
    cache::BaseLease lease = host.cache.acquire(image, progress);
    require_safe_base(lease.base, host.cache.policy());
    result.base = lease.base;
    return rbd::LocalFile{lease.base.path, lease.lock, {{rbd::kImageIdKey, image.id}}};
  };
}

}  // namespace

BootResult provision(const BootRequest& request, const Host& host, const cache::FetchProgress& progress) {
  InstanceDir directory(host.instances_path, request.uuid);
  check_display_name(request.name);
  std::string name = domain_name_for(host, directory.uuid());
  check_flavor(request);
  check_absent(directory, host.libvirt);
  std::string domain_type = virt::resolve_virt_type(host.virt_type, host.libvirt).type;
  // An RBD boot asks Glance itself: a controller's copy of the record is not
  // trusted with the location that is cloned.
  BootRequest asked = request;
  if (host.rbd) asked.image.reset();
  Images images = look_up_images(asked, host.cache);
  std::optional<RbdRoot> rbd_root;
  if (host.rbd) rbd_root = check_rbd_boot(host, images.root, images.kernel.has_value(), directory.uuid());
  virt::DomainSpec spec = initial_spec(request, directory, name, domain_type, images);

  std::error_code error;
  fs::create_directories(host.instances_path, error);
  if (error) throw_io_error("cannot create " + host.instances_path.string(), error.value());
  InstanceLock lock(host.instances_path, directory.uuid());
  KILN_FAILPOINT("boot.locked");
  // nova's [libvirt] disk_cachemodes file=<mode>; "none" needs O_DIRECT, and
  // nova then falls back to writethrough.
  bool direct_io = instances_take_direct_io(host.instances_path);
  if (host.cache_mode.empty() || host.cache_mode == "default") {
    spec.cache_mode = direct_io ? "none" : "writeback";
  } else {
    spec.cache_mode = host.cache_mode == "none" && !direct_io ? "writethrough" : host.cache_mode;
  }

  // Built under a temporary name, renamed into place whole: no crash leaves a
  // directory under the uuid that is empty or holds half a disk set. Every
  // file names the final paths (disk.info, libvirt.xml), never the staging ones.
  TemporaryPath building = create_building_directory(host.instances_path, directory.uuid());
  InstanceDir staging = directory.staged_at(building.path());
  ProvisioningMarker marker = create_marker(staging, request);
  KILN_FAILPOINT("boot.marker.created");
  BootResult result{directory, {}, std::nullopt, std::nullopt, 0, name, domain_type, ""};
  HeldBases held;
  std::optional<RbdClones> clones;
  disk::DiskInfo disk_info;
  if (rbd_root) {
    clones.emplace(*host.rbd);
    build_rbd_disks(request, host, images.root, *rbd_root, verified_base(host, images.root, progress, result),
                    ephemeral_filesystem(host, images), directory, spec, disk_info, result, *clones);
    marker.record("root_disk");
  } else {
    result.base = build_root(request, host, images, directory, staging, progress, spec, result.root_bytes, held);
    disk_info.add(directory.disk(), "qcow2");
    marker.record("root_disk");
    fetch_kernel(host, images, spec, held);
    KILN_FAILPOINT("boot.kernel.fetched");
    result.ephemeral_base = build_ephemeral(request, host, images, directory, staging, spec, disk_info, held);
    result.swap_base = build_swap(request, host, directory, staging, spec, disk_info, held);
  }
  disk_info.save(staging.disk_info(), Durability::kCallerSyncs);
  KILN_FAILPOINT("boot.disk_info.written");
  create_console_log(staging);
  marker.record("disks");

  std::string xml = virt::build_domain_xml(spec);
  write_new_file(staging.libvirt_xml(), xml);
  marker.record("libvirt_xml");
  KILN_FAILPOINT("boot.libvirt_xml.written");
  // Everything the domain will use is durable before libvirt knows of it.
  fsync_together(files_of(staging));
  marker.record("synced");
  KILN_FAILPOINT("boot.synced");
  TemporaryPath directory_guard = publish_directory(building, directory);
  marker.relocate(directory.provisioning_marker());
  held.clear();  // the overlays are where every scan of the instances path finds them
  KILN_FAILPOINT("boot.directory.published");

  std::optional<virt::Domain> domain;
  try {
    KILN_FAILPOINT("boot.define.before");
    domain.emplace(host.libvirt.define(xml));
    KILN_FAILPOINT("boot.define.after");
    marker.record("defined");
    if (request.start) {
      virt::start_and_confirm(host.libvirt, *domain, host.start);
      KILN_FAILPOINT("boot.start.after");
    }
    result.domain_state = domain->state();
    // The boot has succeeded: from here on the instance is whole. (Inside the
    // try: should the marker not go, the boot is undone, not left half-owned.)
    marker.finish();
    if (clones) clones->keep();
  } catch (const std::exception& failure) {
    const auto* error = dynamic_cast<const Error*>(&failure);
    try {
      undo_definition(host, directory, domain.has_value(), marker, directory_guard,
                      error ? *error : Error(ErrorCode::kInternalError, failure.what()));
    } catch (const Error& undone) {
      // A domain that may still be defined may still open its RBD disk: kept with the directory.
      if (undone.code() == ErrorCode::kRollbackIncomplete && clones) clones->keep();
      throw;
    }
  }
  KILN_FAILPOINT("boot.marker.removed");
  directory_guard.keep();
  return result;
}

void to_json(nlohmann::json& out, const BootRequest& request) {
  out = {{"uuid", request.uuid},
         {"image_id", request.image_id},
         {"flavor", {{"vcpus", request.vcpus}, {"memory_mb", request.memory_mb}, {"root_gb", request.root_gb},
                     {"swap_mb", request.swap_mb}, {"ephemeral_gb", request.ephemeral_gb}}},
         {"nics", request.nics},
         {"start", request.start}};
  if (!request.name.empty()) out["name"] = request.name;
  if (request.image) out["image"] = *request.image;
}

void from_json(const nlohmann::json& in, BootRequest& request) {
  request.uuid = in.at("uuid").get<std::string>();
  request.name = in.value("name", std::string());
  request.image_id = in.at("image_id").get<std::string>();
  const nlohmann::json& flavor = in.at("flavor");
  request.vcpus = flavor.at("vcpus").get<unsigned>();
  request.memory_mb = flavor.at("memory_mb").get<std::uint64_t>();
  request.root_gb = flavor.at("root_gb").get<std::uint64_t>();
  request.swap_mb = flavor.value("swap_mb", std::uint64_t{0});
  request.ephemeral_gb = flavor.value("ephemeral_gb", std::uint64_t{0});
  request.nics = in.value("nics", std::vector<virt::NetworkInterface>{});
  request.start = in.value("start", true);
  if (in.contains("image")) {
    request.image = in["image"].get<glance::ImageRecord>();
    request.image->offered = true;
  }
}

void to_json(nlohmann::json& out, const DeleteResult& result) {
  out = {{"uuid", result.uuid}, {"domain_found", result.domain_found}, {"directory_found", result.directory_found}};
  if (!result.rbd_images.empty()) out["rbd_images"] = result.rbd_images;
}

nlohmann::json to_json(const BootResult& result) {
  const auto& dir = result.directory;
  nlohmann::json out = {
      {"uuid", dir.uuid()},
      {"instance_dir", dir.path().string()},
      {"domain", {{"name", result.domain_name}, {"type", result.domain_type}, {"state", result.domain_state}}},
      {"disk", {{"path", dir.disk().string()}, {"format", "qcow2"}, {"virtual_size", result.root_bytes},
                {"backing_file", result.base.path.string()}}},
      {"base", result.base},
      {"disk_info", dir.disk_info().string()},
      {"console_log", dir.console_log().string()},
      {"libvirt_xml", dir.libvirt_xml().string()},
  };
  if (result.rbd_root) {
    // RBD clones: no disk files. The root's parent is Glance's snapshot or
    // kiln's pool base; "base" is the local base only when this boot
    // downloaded the image to write that pool base.
    bool imported = result.rbd_pool_base && result.rbd_pool_base->imported;
    out["disk"] = {{"rbd", result.rbd_root->image}, {"format", "raw"}, {"virtual_size", result.root_bytes},
                   {"parent", result.rbd_root->parent}, {"pool_base_imported", imported}};
    if (imported) {  // what writing the pool base cost, beside the download's figures under "base"
      out["disk"]["pool_base_import"] = {{"written_bytes", result.rbd_pool_base->written_bytes},
                                         {"write_ms", result.rbd_pool_base->write_time.count()},
                                         {"publish_ms", result.rbd_pool_base->publish_time.count()}};
    }
    if (result.rbd_pool_base) out["disk"]["pool_base_waited_ms"] = result.rbd_pool_base->waited.count();
    if (result.base.path.empty()) out["base"] = nullptr;
    if (result.rbd_swap) out["swap"] = {{"rbd", result.rbd_swap->image}, {"parent", result.rbd_swap->parent}};
    if (result.rbd_ephemeral) {
      out["ephemeral"] = {{"rbd", result.rbd_ephemeral->image}, {"parent", result.rbd_ephemeral->parent}};
    }
  }
  if (result.swap_base) {
    out["swap"] = {{"path", dir.swap_disk().string()}, {"backing_file", result.swap_base->string()}};
  }
  if (result.ephemeral_base) {
    out["ephemeral"] = {{"path", dir.ephemeral_disk().string()}, {"backing_file", result.ephemeral_base->string()}};
  }
  return out;
}

namespace {

// Says, durably, that this directory is going: should a crash stop the delete
// between the undefine and the directory's removal, reconcile finishes it
// instead of keeping a directory without a domain "because disks may hold data".
void mark_deleting(const InstanceDir& directory) {
  std::error_code error;
  if (fs::exists(directory.deletion_marker(), error)) return;  // a retried delete
  {
    UniqueFd fd = open_file(directory.deletion_marker(), O_WRONLY | O_CREAT, 0644);
    fsync_file(fd.get(), directory.deletion_marker());
  }
  fsync_directory(directory.path());
}

// Moves the directory out of its uuid name in one rename (a crash then leaves
// a temporary any sweep removes, never half a directory under the uuid), then
// removes it.
void remove_instance_directory(const InstanceDir& directory, const fs::path& instances_path) {
  std::string target = layout::deleting_template(instances_path, directory.uuid());
  if (::mkdtemp(target.data()) == nullptr) throw_io_error("cannot create a directory in " + instances_path.string(), errno);
  // rename(2) replaces the empty directory mkdtemp made.
  if (::rename(directory.path().c_str(), target.c_str()) != 0) {
    int saved = errno;
    ::rmdir(target.c_str());
    throw_io_error("cannot rename " + directory.path().string() + " to " + target, saved);
  }
  fsync_directory(instances_path);
  KILN_FAILPOINT("delete.renamed");
  std::error_code error;
  fs::remove_all(target, error);
  if (error) throw_io_error("cannot remove " + target, error.value());
}

}  // namespace

DeleteResult delete_instance(const std::string& uuid, const fs::path& instances_path,
                             virt::Connection& libvirt, const RbdHost* rbd) {
  InstanceDir directory(instances_path, uuid);
  DeleteResult result;
  result.uuid = directory.uuid();
  std::error_code error;
  result.directory_found = fs::is_directory(directory.path(), error);
  KILN_FAILPOINT("delete.begin");
  if (result.directory_found) mark_deleting(directory);
  KILN_FAILPOINT("delete.marked");
  if (auto domain = libvirt.lookup_by_uuid(directory.uuid())) {
    result.domain_found = true;
    if (domain->is_active()) domain->destroy();
    KILN_FAILPOINT("delete.destroyed");
    if (domain->is_persistent()) domain->undefine();
    KILN_FAILPOINT("delete.undefined");
  }
  // Only now: a running guest holds its image open, and Ceph refuses to remove an open image.
  if (rbd) {
    rbd::Pool pool = rbd->cluster->open_pool(rbd->pool);
    result.rbd_images = rbd::remove_instance_images(pool, directory.uuid());
  }
  if (result.directory_found) remove_instance_directory(directory, instances_path);
  KILN_FAILPOINT("delete.removed");
  return result;
}

}  // namespace kiln::instance
