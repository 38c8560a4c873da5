// What is on this host, instance by instance: the directory, its disks with
// their backing chains, and what libvirt says about the domain.
//
// Reading only: nothing here changes a file, an RBD image or a domain. Disks
// are read with the native inspector (no qemu-img fork), so listing 1,000
// instances stays fast. With images_type = rbd, show_instance also reads the
// instance's images in the pool (<uuid>_disk, _disk.local, _disk.swap) and
// their clone chains (kiln/rbd/image_chain.h). An instance is known when it has a directory under instances_path or
// a domain whose metadata marks it as kiln's (the domain XML kiln writes
// carries <kiln:instance>); domains kiln did not define are not listed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kiln/rbd/image_chain.h"
#include "kiln/virt/connection.h"

namespace kiln::instance {

// One file of a backing chain, as `qemu-img info --backing-chain` tells it.
struct ChainLayer {
  std::filesystem::path path;
  std::string format;               // "qcow2", "raw", ...; "" when the file is missing
  std::uint64_t virtual_size = 0;
  std::uint64_t physical_bytes = 0; // blocks allocated
  bool exists = true;
};

struct DiskReport {
  std::string name;                 // "disk", "disk.local", "disk.swap"
  std::vector<ChainLayer> chain;    // chain[0] is the instance's own file
  // A disk in Ceph instead: rbd_chain[0] is <uuid>_<name>, then the
  // snapshots it was cloned from; chain is empty.
  std::vector<rbd::ChainLayer> rbd_chain;
  std::string problem;              // "" when the chain is whole and every layer safe
};

struct InstanceReport {
  std::string uuid;
  std::filesystem::path directory;
  bool has_directory = false;
  bool provisioning = false;         // the provisioning marker is present
  std::optional<std::string> domain_name;   // set when libvirt knows the uuid
  std::optional<std::string> domain_state;  // "running", "shut off", ...
  std::optional<std::string> display_name;  // the domain's <title>: the boot request's name
  std::vector<DiskReport> disks;     // filled by show_instance only
  // Set when libvirt could not be asked: the domain fields are then unknown,
  // not absent, and this says why.
  std::optional<std::string> libvirt_unreachable;
  // images_type = rbd and Ceph could not be asked: the report has no RBD
  // disks, which says nothing of whether there are any.
  std::optional<std::string> rbd_unreachable;
};

struct RbdHost;

// Throws kiln::Error kNotAnInstancesPath unless `instances_path` is a kiln
// instances path: an existing directory that is empty (a fresh host: the
// package makes it) or holds something of kiln's (_base, locks,
// operations.log, or a directory named by a canonical uuid). A misspelled
// path that does not exist, a file, or a directory of unrelated files only is
// not: reading it as an empty host would report nothing and exit 0.
void require_instances_path(const std::filesystem::path& instances_path);

// Throws kiln::Error kInvalidUuid, kNotFound (no directory, no domain and
// no RBD image of the instance), kRbdError when `rbd` is set and Ceph fails.
InstanceReport show_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                             virt::Connection& libvirt, const RbdHost* rbd = nullptr);

// Every instance, by uuid: directories and kiln's domains, without disks.
std::vector<InstanceReport> list_instances(const std::filesystem::path& instances_path,
                                           virt::Connection& libvirt);

// The operator's views when libvirt is down (`why`, e.g. the connection
// error): what the instances path says, each report marked
// libvirt_unreachable. show_instance's kNotFound then means no directory.
InstanceReport show_instance_without_libvirt(const std::string& uuid, const std::filesystem::path& instances_path,
                                             const std::string& why, const RbdHost* rbd = nullptr);
std::vector<InstanceReport> list_instances_without_libvirt(const std::filesystem::path& instances_path,
                                                           const std::string& why);

// The operator's views, as kilnctl (direct) and kilnd (GET /v1/instances...)
// both answer them, so that the two print the same: with libvirt when
// `connect` gives a connection, else (kLibvirtError from `connect` or from
// libvirt mid-read) the views without libvirt above, each report marked
// libvirt_unreachable with libvirt's sentence. Other errors pass.
using ConnectLibvirt = std::function<virt::Connection&()>;
std::vector<InstanceReport> survey_instances(const std::filesystem::path& instances_path,
                                             const ConnectLibvirt& connect);
InstanceReport survey_instance(const std::string& uuid, const std::filesystem::path& instances_path,
                               const ConnectLibvirt& connect, const RbdHost* rbd = nullptr);

nlohmann::json to_json(const InstanceReport& report);

}  // namespace kiln::instance
