#include "kiln/instance/provision.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "kiln/disk/disk_info.h"
#include "kiln/disk/overlay.h"
#include "kiln/disk/swap.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/virt/domain_xml.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;
constexpr std::uint64_t kMiB = 1024ULL * 1024;
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

// Creates the instance directory with its marker; the returned guard removes
// both unless the boot succeeds.
TemporaryPath create_directory(const InstanceDir& directory, const BootRequest& request) {
  if (::mkdir(directory.path().c_str(), 0755) != 0) {
    if (errno == EEXIST) {
      throw Error(ErrorCode::kInstanceExists, "instance " + directory.uuid() + " already exists");
    }
    throw_io_error("cannot create " + directory.path().string(), errno);
  }
  TemporaryPath guard(directory.path());
  nlohmann::json marker = {{"image_id", request.image_id}, {"name", request.name},
                           {"vcpus", request.vcpus}, {"memory_mb", request.memory_mb},
                           {"root_gb", request.root_gb}, {"swap_mb", request.swap_mb}};
  atomic_write_file(directory.provisioning_marker(), marker.dump() + "\n");
  fsync_directory(directory.path().parent_path());
  return guard;
}

void create_console_log(const InstanceDir& directory) {
  open_file(directory.console_log(), O_WRONLY | O_CREAT | O_APPEND, 0644);
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

virt::DomainSpec domain_spec(const BootRequest& request, const InstanceDir& directory,
                             const std::string& name, const std::string& domain_type,
                             bool with_swap) {
  std::string cache_mode = supports_direct_io(directory.path()) ? "none" : "writeback";
  virt::DomainSpec spec;
  spec.domain_type = domain_type;
  spec.name = name;
  spec.uuid = directory.uuid();
  spec.memory_mb = request.memory_mb;
  spec.vcpus = request.vcpus;
  spec.disks.push_back({directory.disk().string(), "qcow2", "vda", "virtio", cache_mode});
  if (with_swap) spec.disks.push_back({directory.swap_disk().string(), "qcow2", "vdb", "virtio", cache_mode});
  spec.console_log = directory.console_log().string();
  spec.image_id = request.image_id;
  spec.display_name = request.name.empty() ? name : request.name;
  return spec;
}

}  // namespace

BootResult provision(const BootRequest& request, const Host& host, const cache::FetchProgress& progress) {
  InstanceDir directory(host.instances_path, request.uuid);
  std::string name = domain_name_for(request, directory.uuid());
  check_flavor(request);
  check_absent(directory, host.libvirt);
  std::string domain_type = host.virt_type.empty() ? host.libvirt.best_domain_type() : host.virt_type;

  // The base's lock is held until the overlay exists, so the base cannot be
  // pruned or replaced between the check of its size and its first user.
  glance::ImageRecord record = host.cache.lookup(request.image_id);
  if (record.virtual_size) root_size(request, record.id, *record.virtual_size);

  cache::BaseImage base;
  std::uint64_t root_bytes = 0;
  TemporaryPath directory_guard;
  {
    cache::BaseLease lease = host.cache.acquire(record, progress);
    base = lease.base;
    root_bytes = root_size(request, record.id, base.virtual_size);
    directory_guard = create_directory(directory, request);
    disk::create_overlay(directory.disk(), base.path, root_bytes);
  }
  BootResult result{directory, base, std::nullopt, root_bytes, name, domain_type, ""};

  disk::DiskInfo disk_info;
  disk_info.add(directory.disk(), "qcow2");
  if (request.swap_mb > 0) {
    disk::SwapBase swap = disk::ensure_swap_base(host.cache.base_directory(),
                                                 host.instances_path / "locks", request.swap_mb);
    disk::create_overlay(directory.swap_disk(), swap.path, swap.size_bytes);
    disk_info.add(directory.swap_disk(), "qcow2");
    result.swap_base = swap.path;
  }
  disk_info.save(directory.disk_info());
  create_console_log(directory);

  std::string xml = virt::build_domain_xml(
      domain_spec(request, directory, name, domain_type, request.swap_mb > 0));
  atomic_write_file(directory.libvirt_xml(), xml);
  virt::Domain domain = host.libvirt.define(xml);
  DomainRollback rollback(domain);
  fs::remove(directory.provisioning_marker());
  fsync_directory(directory.path());

  if (request.start) domain.start();
  result.domain_state = domain.state();
  rollback.dismiss();
  directory_guard.keep();
  return result;
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
