// A connection to a Ceph cluster and its RBD images, over librados/librbd's C API.
//
// Cluster owns a connected rados_t, Pool an I/O context on one pool (both
// RAII: destroyed, they release what librados holds). Every call that can
// fail throws kiln::Error: kRbdError with what was asked and librados'
// reason ("open pool 'vms': No such file or directory"), kNotFound for an
// image or snapshot that does not exist, kConflict for an image name already
// taken. Nothing reads the environment (CEPH_ARGS, CEPH_CONF): the ceph.conf
// and the user are the caller's. Every cluster call is bounded by the
// connect timeout (client_mount_timeout, rados_mon_op_timeout and
// rados_osd_op_timeout), so an unreachable cluster, a stopped OSD or a
// placement group that never becomes active fails the call with kRbdError
// ("...: Connection timed out") in seconds rather than hanging a boot.
//
// One Cluster per process and cluster: shared_cluster() keeps it. A failed
// connect leaks its librados handle (see Cluster::connect), so connecting
// per request would leak one per failure; shared_cluster() also remembers a
// failure for a while instead of connecting again at once. Its clusters
// are shut down at exit, before OpenSSL (which librados' threads use) tears
// itself down.
//
// A Cluster may be used from several threads (librados' handle is
// thread-safe); a Pool must not be shared between threads without a lock.
// A Pool must not outlive the Cluster it came from.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/rbd/location.h"

// librados' opaque handles, without its headers on every includer's path.
typedef void* rados_t;
typedef void* rados_ioctx_t;

namespace kiln::rbd {

struct ConnectOptions {
  std::filesystem::path ceph_conf = "/etc/ceph/ceph.conf";  // nova's images_rbd_ceph_conf
  // The Ceph user without "client." (nova's rbd_user); "" = librados'
  // default, client.admin. Its key comes from the keyring the conf names.
  std::string user;
  std::chrono::seconds connect_timeout{5};  // nova's rbd_connect_timeout
};

// An image's parent: the snapshot it was cloned from.
struct Parent {
  std::string pool;
  std::string image;
  std::string snapshot;
  std::string spec() const { return pool + "/" + image + "@" + snapshot; }
  bool operator==(const Parent&) const = default;
};

struct ImageInfo {
  std::string name;
  std::uint64_t size_bytes = 0;   // virtual size
  std::optional<Parent> parent;   // set for a clone whose parent still exists
};

struct SnapshotState {
  bool exists = false;
  bool is_protected = false;
  std::uint64_t size_bytes = 0;  // the image's virtual size at the snapshot
};

class Pool {
 public:
  Pool(Pool&& other) noexcept;
  Pool& operator=(Pool&& other) noexcept;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  const std::string& name() const { return name_; }
  rados_ioctx_t handle() const { return io_; }

  bool image_exists(const std::string& image) const;
  // Throws kNotFound when there is no such image.
  ImageInfo stat(const std::string& image) const;
  // Every image of the pool (default namespace), sorted by name, each with
  // its parent: the pool's clone chains.
  std::vector<ImageInfo> list() const;
  // Throws kNotFound when the image does not exist (a missing snapshot is
  // exists == false).
  SnapshotState snapshot(const std::string& image, const std::string& snapshot) const;
  // Grows `image` to `size_bytes`. Never shrinks: a smaller size throws
  // kFlavorDiskTooSmall and leaves the image as it was; the same size does nothing.
  void grow(const std::string& image, std::uint64_t size_bytes);
  // Removes `image`. Throws kNotFound when it does not exist, kRbdError when
  // Ceph refuses (it has snapshots, or a client still has it open).
  void remove(const std::string& image);

 private:
  friend class Cluster;
  Pool(rados_ioctx_t io, std::string name) : io_(io), name_(std::move(name)) {}
  rados_ioctx_t io_ = nullptr;
  std::string name_;
};

class Cluster {
 public:
  // Reads `options.ceph_conf` (and the keyring it names) and connects.
  // Throws kRbdError naming the conf file when that fails. A failed connect
  // leaks librados' handle (and the threads still trying to connect): shut
  // down, it would crash the process (see cluster.cpp). Callers that retry
  // should keep one Cluster per host rather than connect per request.
  static Cluster connect(const ConnectOptions& options);

  Cluster(Cluster&& other) noexcept;
  Cluster& operator=(Cluster&& other) noexcept;
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  ~Cluster();

  // The cluster's fsid, canonical lower-case.
  const std::string& fsid() const { return fsid_; }
  // Throws kRbdError when the pool does not exist or the user may not use it.
  Pool open_pool(const std::string& name) const;

  // Throws kRbdNotSameCluster unless `location` is in this cluster.
  void check_same_cluster(const Location& location) const;
  // All that must hold before `location` is cloned: the same cluster, the
  // image and its snapshot exist (kNotFound), the snapshot is protected
  // (kRbdSnapshotUnprotected: an unprotected one Glance may delete under
  // the clone, and clone v1 would refuse it anyway).
  void check_cloneable(const Location& location) const;

  // Clones the snapshot `location` names into `pool`/`child` (after
  // check_cloneable) with the cluster's default features. Throws kConflict
  // when `child` exists. The child's virtual size is the parent's.
  void clone(const Location& location, Pool& pool, const std::string& child) const;

 private:
  explicit Cluster(rados_t handle) : handle_(handle) {}
  rados_t handle_ = nullptr;
  std::string fsid_;
};

// The process's Cluster for `options` (the same ceph.conf, user and
// timeout): connected on first use, then shared by every caller. A failed
// connect is remembered for kReconnectAfter and rethrown to the callers in
// that time, so a down cluster costs one leaked handle per interval, not one
// per boot. Thread-safe; callers in the meantime wait for the connect.
inline constexpr std::chrono::seconds kReconnectAfter{10};
std::shared_ptr<const Cluster> shared_cluster(const ConnectOptions& options);

// The monitors a ceph.conf names (its mon_host, as librados reads the file)
// in the form QEMU's librbd is given them by libvirt: host and port of each
// monitor's v1 (legacy) address. Throws kRbdError when the file cannot be
// read or names no monitor.
struct Monitor {
  std::string host;
  int port = 0;
  bool operator==(const Monitor&) const = default;
};
std::vector<Monitor> conf_monitors(const std::filesystem::path& ceph_conf);

// mon_host as Ceph writes it: monitors separated by ',', ';' or spaces, each
// an address vector "[v2:<ip>:<port>,v1:<ip>:<port>]", a "v1:"/"v2:"
// address, or a plain "<host>[:<port>]" (IPv6 in brackets; port 6789 when
// left out). A monitor's v1 address is taken; a v2-only one is left out (QEMU
// would speak v1 to it). Throws kRbdError when no monitor is left or an
// address is malformed. Pure.
std::vector<Monitor> parse_mon_host(std::string_view mon_host);

}  // namespace kiln::rbd
