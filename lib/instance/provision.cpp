#include "kiln/instance/provision.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "kiln/cache/maintenance.h"
#include "kiln/disk/disk_info.h"
#include "kiln/disk/ephemeral.h"
#include "kiln/disk/overlay.h"
#include "kiln/disk/swap.h"
#include "kiln/image/inspector.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/image_properties.h"
#include "kiln/virt/virt_type.h"
#include "provisioning_marker.h"

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

std::string domain_name_for(const BootRequest& request, const std::string& uuid) {
  std::string name = request.name.empty() ? "instance-" + uuid : request.name;
  if (name.size() > 255) invalid("domain name is longer than 255 characters");
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f || c == '/') invalid("domain name '" + name + "' has '/' or a control character");
  }
  return name;
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
  Images images{cache.lookup(request.image_id), std::nullopt, std::nullopt};
  const auto& properties = images.root.properties;
  if (auto it = properties.find("kernel_id"); it != properties.end()) images.kernel = cache.lookup(it->second);
  if (auto it = properties.find("ramdisk_id"); it != properties.end()) images.ramdisk = cache.lookup(it->second);
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

// Creates the instance directory; the returned guard removes it (and all it
// will hold) unless the boot succeeds.
TemporaryPath create_directory(const InstanceDir& directory) {
  if (::mkdir(directory.path().c_str(), 0755) != 0) {
    if (errno == EEXIST) {
      throw Error(ErrorCode::kInstanceExists, "instance " + directory.uuid() + " already exists");
    }
    throw_io_error("cannot create " + directory.path().string(), errno);
  }
  return TemporaryPath(directory.path());
}

ProvisioningMarker create_marker(const InstanceDir& directory, const BootRequest& request) {
  nlohmann::json marker = {{"uuid", directory.uuid()}, {"image_id", request.image_id}, {"name", request.name},
                           {"vcpus", request.vcpus}, {"memory_mb", request.memory_mb},
                           {"root_gb", request.root_gb}, {"swap_mb", request.swap_mb},
                           {"ephemeral_gb", request.ephemeral_gb}};
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

// Root disk: an overlay on the image's base, or for an ISO a blank disk with
// the ISO's base attached as a cdrom. The base's lock is held until the
// overlay exists, so it cannot be pruned or replaced in between.
cache::BaseImage build_root(const BootRequest& request, const Host& host, const Images& images,
                            const InstanceDir& directory, const cache::FetchProgress& progress,
                            virt::DomainSpec& spec, std::uint64_t& root_bytes) {
  cache::BaseLease lease = host.cache.acquire(images.root, progress);
  require_safe_base(lease.base, host.cache.policy());
  if (images.is_iso()) {
    root_bytes = request.root_gb * kGiB;
    disk::create_blank_qcow2(directory.disk(), root_bytes);  // qemu-img, in kiln's sandbox
    spec.cdrom_images.push_back(lease.base.path.string());
    spec.boot_from_cdrom = true;
  } else {
    root_bytes = root_size(request, images.root.id, lease.base.virtual_size);
    disk::create_overlay(directory.disk(), lease.base.path, root_bytes, disk::OverlayWriter::kNative,
                         Durability::kCallerSyncs);
  }
  spec.root_disk = virt::DiskFile{directory.disk().string(), "qcow2"};
  return lease.base;
}

// kernel_id / ramdisk_id images: raw files in _base, booted directly.
void fetch_kernel(const Host& host, const Images& images, virt::DomainSpec& spec) {
  if (!images.kernel) return;
  cache::BaseLease kernel = host.cache.acquire(*images.kernel);
  require_safe_base(kernel.base, host.cache.policy());
  spec.kernel_path = kernel.base.path.string();
  if (!images.ramdisk) return;
  cache::BaseLease ramdisk = host.cache.acquire(*images.ramdisk);
  require_safe_base(ramdisk.base, host.cache.policy());
  spec.initrd_path = ramdisk.base.path.string();
}

std::optional<fs::path> build_ephemeral(const BootRequest& request, const Host& host,
                                        const InstanceDir& directory, virt::DomainSpec& spec,
                                        disk::DiskInfo& disk_info) {
  if (request.ephemeral_gb == 0) return std::nullopt;
  disk::EphemeralBase base = disk::ensure_ephemeral_base(host.cache.base_directory(), host.cache.lock_directory(),
                                                         request.ephemeral_gb,
                                                         disk::ephemeral_filesystem_for(spec.os_type));
  cache::touch_base(base.path);
  disk::create_overlay(directory.ephemeral_disk(), base.path, base.size_bytes, disk::OverlayWriter::kNative,
                       Durability::kCallerSyncs);
  disk_info.add(directory.ephemeral_disk(), "qcow2");
  spec.ephemeral_disk = virt::DiskFile{directory.ephemeral_disk().string(), "qcow2"};
  return base.path;
}

std::optional<fs::path> build_swap(const BootRequest& request, const Host& host, const InstanceDir& directory,
                                   virt::DomainSpec& spec, disk::DiskInfo& disk_info) {
  if (request.swap_mb == 0) return std::nullopt;
  disk::SwapBase base = disk::ensure_swap_base(host.cache.base_directory(), host.cache.lock_directory(),
                                               request.swap_mb);
  cache::touch_base(base.path);
  disk::create_overlay(directory.swap_disk(), base.path, base.size_bytes, disk::OverlayWriter::kNative,
                       Durability::kCallerSyncs);
  disk_info.add(directory.swap_disk(), "qcow2");
  spec.swap_disk = virt::DiskFile{directory.swap_disk().string(), "qcow2"};
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

// Undefines (and powers off) a defined domain unless dismissed.
class DomainRollback {
 public:
  explicit DomainRollback(virt::Domain& domain) : domain_(&domain) {}
  DomainRollback(const DomainRollback&) = delete;
  DomainRollback& operator=(const DomainRollback&) = delete;
  ~DomainRollback() {
    if (domain_ == nullptr) return;
    try {
      if (domain_->is_active()) domain_->destroy();
      domain_->undefine();
    } catch (const Error&) {
      // Best effort: the original error is what the caller must see.
    }
  }
  void dismiss() { domain_ = nullptr; }

 private:
  virt::Domain* domain_;
};

}  // namespace

BootResult provision(const BootRequest& request, const Host& host, const cache::FetchProgress& progress) {
  InstanceDir directory(host.instances_path, request.uuid);
  std::string name = domain_name_for(request, directory.uuid());
  check_flavor(request);
  check_absent(directory, host.libvirt);
  std::string domain_type = virt::resolve_virt_type(host.virt_type, host.libvirt).type;
  Images images = look_up_images(request, host.cache);
  virt::DomainSpec spec = initial_spec(request, directory, name, domain_type, images);

  std::error_code error;
  fs::create_directories(host.instances_path, error);
  if (error) throw_io_error("cannot create " + host.instances_path.string(), error.value());
  spec.cache_mode = supports_direct_io(host.instances_path) ? "none" : "writeback";

  TemporaryPath directory_guard = create_directory(directory);
  ProvisioningMarker marker = create_marker(directory, request);
  BootResult result{directory, {}, std::nullopt, std::nullopt, 0, name, domain_type, ""};
  result.base = build_root(request, host, images, directory, progress, spec, result.root_bytes);
  marker.record("root_disk");
  fetch_kernel(host, images, spec);
  disk::DiskInfo disk_info;
  disk_info.add(directory.disk(), "qcow2");
  result.ephemeral_base = build_ephemeral(request, host, directory, spec, disk_info);
  result.swap_base = build_swap(request, host, directory, spec, disk_info);
  disk_info.save(directory.disk_info(), Durability::kCallerSyncs);
  create_console_log(directory);
  marker.record("disks");

  std::string xml = virt::build_domain_xml(spec);
  write_new_file(directory.libvirt_xml(), xml);
  marker.record("libvirt_xml");
  // Everything the domain will use is durable before libvirt knows of it.
  fsync_together(files_of(directory));
  marker.record("synced");
  virt::Domain domain = host.libvirt.define(xml);
  DomainRollback rollback(domain);
  marker.record("defined");
  marker.finish();

  if (request.start) virt::start_and_confirm(host.libvirt, domain, host.start);
  result.domain_state = domain.state();
  rollback.dismiss();
  directory_guard.keep();
  return result;
}

nlohmann::json to_json(const BootResult& result) {
  const auto& dir = result.directory;
  nlohmann::json out = {
      {"uuid", dir.uuid()},
      {"instance_dir", dir.path().string()},
      {"domain", {{"name", result.domain_name}, {"type", result.domain_type}, {"state", result.domain_state}}},
      {"disk", {{"path", dir.disk().string()}, {"format", "qcow2"}, {"virtual_size", result.root_bytes},
                {"backing_file", result.base.path.string()}}},
      {"base", {{"path", result.base.path.string()}, {"image_id", result.base.record.id},
                {"image_name", result.base.record.name}, {"disk_format", result.base.record.disk_format},
                {"virtual_size", result.base.virtual_size}, {"downloaded_bytes", result.base.downloaded_bytes},
                {"resumes", result.base.resumes}}},
      {"disk_info", dir.disk_info().string()},
      {"console_log", dir.console_log().string()},
      {"libvirt_xml", dir.libvirt_xml().string()},
  };
  if (result.swap_base) {
    out["swap"] = {{"path", dir.swap_disk().string()}, {"backing_file", result.swap_base->string()}};
  }
  if (result.ephemeral_base) {
    out["ephemeral"] = {{"path", dir.ephemeral_disk().string()}, {"backing_file", result.ephemeral_base->string()}};
  }
  return out;
}

DeleteResult delete_instance(const std::string& uuid, const fs::path& instances_path,
                             virt::Connection& libvirt) {
  InstanceDir directory(instances_path, uuid);
  DeleteResult result;
  if (auto domain = libvirt.lookup_by_uuid(directory.uuid())) {
    result.domain_found = true;
    if (domain->is_active()) domain->destroy();
    if (domain->is_persistent()) domain->undefine();
  }
  std::error_code error;
  result.directory_found = fs::exists(directory.path(), error);
  fs::remove_all(directory.path(), error);
  if (error) throw_io_error("cannot remove " + directory.path().string(), error.value());
  return result;
}

}  // namespace kiln::instance
