#include "kiln/rbd/cluster.h"

#include <openssl/crypto.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "kiln/util/error.h"
#include "kiln/util/uuid.h"
#include "handles.h"

namespace kiln::rbd {

// ---- Pool ----------------------------------------------------------------

Pool::Pool(Pool&& other) noexcept : io_(std::exchange(other.io_, nullptr)), name_(std::move(other.name_)) {}

Pool& Pool::operator=(Pool&& other) noexcept {
  if (this != &other) {
    if (io_) rados_ioctx_destroy(io_);
    io_ = std::exchange(other.io_, nullptr);
    name_ = std::move(other.name_);
  }
  return *this;
}

Pool::~Pool() {
  if (io_) rados_ioctx_destroy(io_);
}

bool Pool::image_exists(const std::string& image) const {
  rbd_image_t handle = nullptr;
  int result = rbd_open_read_only(io_, image.c_str(), &handle, nullptr);
  if (result == -ENOENT) return false;
  if (result < 0) fail("open RBD image " + name_ + "/" + image, result);
  rbd_close(handle);
  return true;
}

ImageInfo Pool::stat(const std::string& image) const {
  std::string spec = name_ + "/" + image;
  OpenImage open(io_, name_, image, true);
  return ImageInfo{image, image_size(open, spec), image_parent(open, spec)};
}

std::vector<ImageInfo> Pool::list() const {
  std::vector<rbd_image_spec_t> specs(64);
  std::size_t count = specs.size();
  int result = 0;
  while ((result = rbd_list2(io_, specs.data(), &count)) == -ERANGE) specs.resize(count);
  if (result < 0) fail("list RBD images of pool " + name_, result);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < count; ++i) names.emplace_back(specs[i].name);
  rbd_image_spec_list_cleanup(specs.data(), count);
  std::sort(names.begin(), names.end());
  std::vector<ImageInfo> images;
  for (const auto& name : names) {
    try {
      images.push_back(stat(name));
    } catch (const Error& error) {
      if (error.code() != ErrorCode::kNotFound) throw;  // removed since the listing: not an image any more
    }
  }
  return images;
}

SnapshotState Pool::snapshot(const std::string& image, const std::string& snapshot) const {
  std::string spec = name_ + "/" + image;
  // One open of the image for all three answers: librbd 16.2.15 was seen to
  // hang in an open (its io_context thread blocked on a librbd mutex; once in
  // about 20 runs of tests/integration/test_rbd.cpp), so kiln opens as little as it can.
  OpenImage open(io_, name_, image, true);
  std::vector<rbd_snap_info_t> snaps(16);
  int max = static_cast<int>(snaps.size());
  int count = 0;
  while ((count = rbd_snap_list(open.get(), snaps.data(), &max)) == -ERANGE) snaps.resize(static_cast<std::size_t>(max));
  if (count < 0) fail("snapshots of " + spec, count);
  SnapshotState state;
  for (int i = 0; i < count; ++i) {
    if (snaps[i].name != nullptr && snapshot == snaps[i].name) {
      state.exists = true;
      state.size_bytes = snaps[i].size;
    }
  }
  rbd_snap_list_end(snaps.data());
  if (!state.exists) return {};
  int is_protected = 0;
  int result = rbd_snap_is_protected(open.get(), snapshot.c_str(), &is_protected);
  if (result == -ENOENT) return {};  // removed between the two calls
  if (result < 0) fail("protection of snapshot " + spec + "@" + snapshot, result);
  state.is_protected = is_protected != 0;
  return state;
}

void Pool::grow(const std::string& image, std::uint64_t size_bytes) {
  std::string spec = name_ + "/" + image;
  OpenImage open(io_, name_, image, false);
  std::uint64_t size = image_size(open, spec);
  if (size_bytes < size) {
    throw Error(ErrorCode::kFlavorDiskTooSmall, "RBD image " + spec + " is " + std::to_string(size) +
                                                    " bytes; it is never shrunk to " + std::to_string(size_bytes));
  }
  if (size_bytes == size) return;
  int result = rbd_resize2(open.get(), size_bytes, false, nullptr, nullptr);
  if (result < 0) fail("resize RBD image " + spec + " to " + std::to_string(size_bytes) + " bytes", result);
}

void Pool::remove(const std::string& image) {
  int result = rbd_remove(io_, image.c_str());
  if (result < 0) fail_image("remove RBD image", name_ + "/" + image, result);
}

// ---- Cluster -------------------------------------------------------------

Cluster Cluster::connect(const ConnectOptions& options) {
  rados_t handle = nullptr;
  std::string who = options.user.empty() ? "client.admin" : "client." + options.user;
  int result = rados_create(&handle, options.user.empty() ? nullptr : options.user.c_str());
  if (result < 0) fail("create a Ceph handle for " + who, result);
  Cluster cluster(handle);  // shuts the handle down on every failure below
  std::string where = "Ceph cluster of " + options.ceph_conf.string() + " as " + who;
  result = rados_conf_read_file(handle, options.ceph_conf.c_str());
  if (result < 0) fail("read " + options.ceph_conf.string(), result);
  // The wall behind every call: without these librados waits forever for a
  // monitor (mon_op) or an OSD (osd_op: a PG that never becomes active, a
  // stopped OSD), and so does every librbd call built on them (an image
  // open is a few OSD reads). With them a stuck call fails with ETIMEDOUT,
  // which becomes kRbdError, and a boot fails instead of hanging.
  std::string timeout = std::to_string(std::max<long long>(1, options.connect_timeout.count()));
  for (const char* option : {"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"}) {
    result = rados_conf_set(handle, option, timeout.c_str());
    if (result < 0) fail("set " + std::string(option) + " for the " + where, result);
  }
  result = rados_connect(handle);
  if (result < 0) {
    // A connect that timed out leaves librados threads still trying; shutting
    // the handle down under them aborts the process later (std::system_error
    // in an io_context_pool thread, seen with Ceph 16.2.15; ceph.in skips the
    // shutdown for the same reason). The failed handle is leaked instead.
    cluster.handle_ = nullptr;
    fail("connect to the " + where, result);
  }
  char fsid[64] = {};
  result = rados_cluster_fsid(handle, fsid, sizeof fsid - 1);
  if (result < 0) fail("fsid of the " + where, result);
  cluster.fsid_ = normalize_uuid(fsid);
  return cluster;
}

Cluster::Cluster(Cluster&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), fsid_(std::move(other.fsid_)) {}

Cluster& Cluster::operator=(Cluster&& other) noexcept {
  if (this != &other) {
    if (handle_) rados_shutdown(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    fsid_ = std::move(other.fsid_);
  }
  return *this;
}

Cluster::~Cluster() {
  if (handle_) rados_shutdown(handle_);
}

Pool Cluster::open_pool(const std::string& name) const {
  rados_ioctx_t io = nullptr;
  int result = rados_ioctx_create(handle_, name.c_str(), &io);
  if (result < 0) fail("open Ceph pool '" + name + "'", result);
  return Pool(io, name);
}

void Cluster::check_same_cluster(const Location& location) const {
  if (location.fsid != fsid_) {
    throw Error(ErrorCode::kRbdNotSameCluster, "RBD image " + location.spec() + " is in Ceph cluster " + location.fsid +
                                                   ", not in this host's cluster " + fsid_ + ": it cannot be cloned");
  }
}

void Cluster::check_cloneable(const Location& location) const {
  check_same_cluster(location);
  Pool pool = open_pool(location.pool);
  SnapshotState state = pool.snapshot(location.image, location.snapshot);
  if (!state.exists) throw Error(ErrorCode::kNotFound, "RBD snapshot " + location.spec() + " does not exist");
  if (!state.is_protected) {
    throw Error(ErrorCode::kRbdSnapshotUnprotected,
                "RBD snapshot " + location.spec() + " is not protected: its owner could delete it under a clone");
  }
}

void Cluster::clone(const Location& location, Pool& pool, const std::string& child) const {
  check_cloneable(location);
  Pool parent = open_pool(location.pool);
  rbd_image_options_t options = nullptr;
  rbd_image_options_create(&options);
  int result = rbd_clone3(parent.handle(), location.image.c_str(), location.snapshot.c_str(), pool.handle(),
                          child.c_str(), options);
  rbd_image_options_destroy(options);
  std::string spec = pool.name() + "/" + child;
  if (result == -EEXIST) throw Error(ErrorCode::kConflict, "RBD image " + spec + " already exists");
  if (result < 0) fail("clone " + location.spec() + " to " + spec, result);
}

// ---- One cluster per process ------------------------------------------

std::shared_ptr<const Cluster> shared_cluster(const ConnectOptions& options) {
  struct Entry {
    std::shared_ptr<const Cluster> cluster;
    std::optional<Error> failure;
    std::chrono::steady_clock::time_point failed_at;
  };
  // The clusters below are shut down at exit by the map's destructor, and
  // librados' messenger threads use OpenSSL (on-wire encryption) until that
  // shutdown joins them. OpenSSL registers its own teardown (OPENSSL_cleanup)
  // with atexit when it is first initialised; left to itself that happens in
  // a messenger thread during the first connect, after this map was built,
  // so it ran first: the threads ran on after OpenSSL's teardown, and the
  // per-thread error state OpenSSL had given a messenger thread was never
  // freed (the 904-byte LeakSanitizer report of issue 18).
  // Initialising OpenSSL before the map is built registers its teardown
  // first, so it runs last, after every cluster here is shut down. The
  // option is the one OpenSSL's own first use loads (its config file); with
  // no option at all OPENSSL_init_crypto 3.0 returns before registering.
  [[maybe_unused]] static const bool openssl_initialised = [] {
    if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr) != 1) {
      throw Error(ErrorCode::kRbdError, "initialise OpenSSL before connecting to a Ceph cluster");
    }
    return true;
  }();
  static std::mutex mutex;
  static std::map<std::tuple<std::string, std::string, long long>, Entry> clusters;
  // Held across the connect: a second caller waits for the first connect's
  // outcome rather than making (and perhaps leaking) a handle of its own.
  std::lock_guard lock(mutex);
  Entry& entry = clusters[{options.ceph_conf.lexically_normal().string(), options.user,
                           static_cast<long long>(options.connect_timeout.count())}];
  if (entry.cluster) return entry.cluster;
  if (entry.failure && std::chrono::steady_clock::now() - entry.failed_at < kReconnectAfter) throw *entry.failure;
  try {
    entry.cluster = std::make_shared<const Cluster>(Cluster::connect(options));
    entry.failure.reset();
    return entry.cluster;
  } catch (const Error& error) {
    entry.failure = error;
    entry.failed_at = std::chrono::steady_clock::now();
    throw;
  }
}

// ---- Monitors ------------------------------------------------------------

namespace {

[[noreturn]] void bad_mon_host(std::string_view mon_host, const std::string& why) {
  std::string shown;
  for (unsigned char c : mon_host.substr(0, 200)) shown += std::isprint(c) ? static_cast<char>(c) : '?';
  throw Error(ErrorCode::kRbdError, "mon_host '" + shown + "': " + why);
}

// "<host>[:<port>]" or "[<ipv6>][:<port>]", a "/<nonce>" suffix dropped.
Monitor parse_address(std::string_view mon_host, std::string_view address) {
  if (auto slash = address.find('/'); slash != std::string_view::npos) address = address.substr(0, slash);
  std::string_view host = address;
  std::string_view port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string_view::npos) bad_mon_host(mon_host, "an IPv6 address without ']'");
    host = address.substr(1, close - 1);
    std::string_view rest = address.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') bad_mon_host(mon_host, "text after an IPv6 address");
      port = rest.substr(1);
    }
  } else if (std::count(address.begin(), address.end(), ':') == 1) {
    auto colon = address.find(':');
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (host.empty() || host.size() > 253) bad_mon_host(mon_host, "a monitor without a host");
  for (char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':') {
      bad_mon_host(mon_host, "a monitor host with a character no address has");
    }
  }
  int number = 6789;  // Ceph's v1 port, what a monitor without one listens on
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      bad_mon_host(mon_host, "a monitor port that is not a number");
    }
    number = std::stoi(std::string(port));
    if (number < 1 || number > 65535) bad_mon_host(mon_host, "a monitor port out of range");
  }
  return Monitor{std::string(host), number};
}

bool is_separator(char c) { return c == ',' || c == ';' || std::isspace(static_cast<unsigned char>(c)); }

}  // namespace

std::vector<Monitor> parse_mon_host(std::string_view mon_host) {
  std::vector<Monitor> monitors;
  std::size_t i = 0;
  while (i < mon_host.size()) {
    if (is_separator(mon_host[i])) {
      ++i;
      continue;
    }
    if (mon_host.compare(i, 2, "[v") == 0) {  // an address vector: [v2:a:p,v1:a:p]
      std::size_t close = i + 1;  // the matching ']': an IPv6 address inside has brackets of its own
      for (int depth = 1; close < mon_host.size(); ++close) {
        if (mon_host[close] == '[') ++depth;
        if (mon_host[close] == ']' && --depth == 0) break;
      }
      if (close >= mon_host.size()) bad_mon_host(mon_host, "an address vector without ']'");
      std::string_view vector = mon_host.substr(i + 1, close - i - 1);
      std::optional<Monitor> v1;
      while (!vector.empty()) {
        auto comma = vector.find(',');
        std::string_view address = vector.substr(0, comma);
        vector = comma == std::string_view::npos ? std::string_view() : vector.substr(comma + 1);
        if (address.rfind("v1:", 0) == 0) {
          if (!v1) v1 = parse_address(mon_host, address.substr(3));
        } else if (address.rfind("v2:", 0) == 0 || address.rfind("any:", 0) == 0) {
          parse_address(mon_host, address.substr(address.find(':') + 1));  // checked, not used
        } else {
          bad_mon_host(mon_host, "an address in a vector without v1:/v2:");
        }
      }
      if (v1) monitors.push_back(*v1);
      i = close + 1;
      continue;
    }
    std::size_t end = i;
    if (mon_host[i] == '[') end = mon_host.find(']', i);  // a plain IPv6 address
    if (end == std::string_view::npos) bad_mon_host(mon_host, "an IPv6 address without ']'");
    while (end < mon_host.size() && !is_separator(mon_host[end])) ++end;
    std::string_view address = mon_host.substr(i, end - i);
    i = end;
    if (address.rfind("v2:", 0) == 0) {
      parse_address(mon_host, address.substr(3));  // a v2-only monitor: QEMU would speak v1 to it
      continue;
    }
    if (address.rfind("v1:", 0) == 0) address = address.substr(3);
    monitors.push_back(parse_address(mon_host, address));
  }
  if (monitors.empty()) bad_mon_host(mon_host, "no monitor with a v1 address");
  return monitors;
}

std::vector<Monitor> conf_monitors(const std::filesystem::path& ceph_conf) {
  // librados reads the file (sections, "mon host" and "mon_host" alike);
  // the handle never connects, so it is shut down safely.
  rados_t handle = nullptr;
  int result = rados_create(&handle, nullptr);
  if (result < 0) fail("create a Ceph handle to read " + ceph_conf.string(), result);
  std::unique_ptr<void, void (*)(void*)> guard(handle, [](void* h) { rados_shutdown(static_cast<rados_t>(h)); });
  result = rados_conf_read_file(handle, ceph_conf.c_str());
  if (result < 0) fail("read " + ceph_conf.string(), result);
  std::vector<char> value(4096);
  while ((result = rados_conf_get(handle, "mon_host", value.data(), value.size())) == -ENAMETOOLONG &&
         value.size() < (1u << 20)) {
    value.resize(value.size() * 2);
  }
  if (result < 0) fail("mon_host of " + ceph_conf.string(), result);
  std::string mon_host(value.data());
  if (mon_host.empty()) throw Error(ErrorCode::kRbdError, ceph_conf.string() + " names no monitor (mon_host)");
  return parse_mon_host(mon_host);
}

}  // namespace kiln::rbd
