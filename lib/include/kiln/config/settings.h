// kiln's settings: defaults, then the INI file, then command-line flags.
//
// The file is nova.conf-style (see kiln/util/ini.h); systemd/kiln.conf.sample
// documents every key. nova.conf's own names for the features kiln has are
// accepted with nova's meaning (kiln's names stay as aliases); any other
// nova.conf option is accepted and ignored with one warning in
// Settings::warnings, so a nova.conf section can be pasted. A key neither
// kiln's nor nova's, or a bad value, is refused with the file, line and key,
// so a typo never silently falls back to a default.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/cache/cache_policy.h"
#include "kiln/glance/keystone.h"
#include "kiln/http/client.h"
#include "kiln/http/url.h"
#include "kiln/virt/domain_spec.h"
#include "kiln/virt/guest_start.h"

namespace kiln::config {

inline constexpr const char* kDefaultConfigFile = "/etc/kiln/kiln.conf";
inline constexpr const char* kDefaultInstancesPath = "/var/lib/kiln/instances";
inline constexpr const char* kDefaultLibvirtUri = "qemu:///system";
inline constexpr const char* kDefaultSocket = "/run/kiln/kiln.sock";

// A TCP address to listen on ([rpc] listen = host:port, [v6]:port).
struct ListenAddress {
  std::string host;  // an IP address or a name, without brackets
  std::uint16_t port = 0;
  bool is_loopback() const;  // 127.0.0.0/8, ::1 or "localhost"
};

// [rpc]: how kilnd listens and how much it takes on at once.
struct RpcSettings {
  std::filesystem::path unix_socket = kDefaultSocket;
  unsigned socket_mode = 0660;
  std::string socket_group;  // "" = the agent's group
  std::optional<ListenAddress> listen;  // unset: no TCP
  bool plain_tcp = false;  // TCP without TLS; only on loopback
  unsigned max_connections = 128;
  // Connections one peer (a uid on the Unix socket, an address on TCP) may
  // hold at once; 0 = half of max_connections (at least 1).
  unsigned max_connections_per_peer = 0;
  std::uint64_t max_body_bytes = 1048576;
  std::uint64_t max_header_bytes = 16384;
  std::chrono::seconds request_timeout{30};
  // A connection must deliver a request's whole header block this soon after
  // it opens (or after its previous answer): idle and trickling connections
  // go first, while a request whose header is in gets request_timeout.
  std::chrono::seconds header_timeout{10};
  unsigned max_concurrent_builds = 10;  // nova's max_concurrent_builds
  unsigned max_concurrent_downloads = 4;
  std::chrono::seconds shutdown_timeout{60};
  // Finished operations are remembered (GET, idempotent re-POST, across
  // restarts) at least this long, and at most max_retained_operations at once.
  std::chrono::seconds operation_retention{3600};
  std::size_t max_retained_operations = 10000;
};

// [tls]: the TCP listener's certificate and the CA client certificates must
// chain to (mutual TLS). All three are required for TCP without plain_tcp.
struct TlsServerSettings {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
};

// [libvirt] images_type and nova's RBD keys, with nova's names, defaults and
// meanings. With rbd, boots clone raw images Glance keeps in the same
// cluster (kiln::instance::RbdHost); a warning says what is not done yet.
struct RbdSettings {
  bool enabled = false;                                    // images_type = rbd
  std::string pool = "rbd";                                // images_rbd_pool: the instances' images
  std::filesystem::path ceph_conf = "/etc/ceph/ceph.conf";  // images_rbd_ceph_conf
  std::string user;                                        // rbd_user, without "client."; "" = client.admin
  std::string secret_uuid;                                 // rbd_secret_uuid: libvirt's ceph secret, lower-case
  std::string glance_store_name;                           // images_rbd_glance_store_name; "" = none
  std::chrono::seconds connect_timeout{5};                 // rbd_connect_timeout
};

// [amqp]: the message bus kilnd also serves on (kiln/bus/agent_bus.h); an
// empty url leaves it off. amqps:// URLs verify the broker against ca_file
// and may present cert_file/key_file as the client's certificate.
struct AmqpSettings {
  std::string url;  // amqp://user:password@host:port/vhost or amqps://...
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::chrono::seconds heartbeat{10};        // AMQP connection heartbeat
  std::chrono::seconds report_interval{10};  // kiln.heartbeat state reports
  std::chrono::milliseconds max_reconnect_backoff{5000};
};

struct Settings {
  // [DEFAULT] host: this host's name on the bus (queue kiln.<host>); "" = the hostname.
  std::string host;
  std::filesystem::path instances_path = kDefaultInstancesPath;
  // [glance]
  std::vector<http::Url> glance_api_servers;
  http::Timeouts glance_timeouts;
  http::TlsOptions glance_tls;
  std::string glance_token;  // static X-Auth-Token, "" = none
  // [keystone]: set when auth_url is; tokens then come from Keystone, and the
  // image endpoints from its catalog when [glance] api_servers is empty.
  std::optional<glance::KeystoneCredentials> keystone;
  http::TlsOptions keystone_tls;
  // [image_cache] and the fetch/verify parts of [glance]
  cache::CachePolicy cache;
  // [libvirt]
  std::string libvirt_uri = kDefaultLibvirtUri;
  std::string virt_type;  // "" = kvm where libvirt offers it and it works, else qemu
  virt::StartPolicy start;  // start_timeout_seconds
  // [rpc], [tls] (kilnd)
  RpcSettings rpc;
  TlsServerSettings tls;
  AmqpSettings amqp;
  // [image_cache] manager_interval_seconds: kilnd's periodic aging and budget
  // prune; 0 disables it.
  std::chrono::seconds cache_manager_interval{2400};
  // [DEFAULT] instance_name_template (virt::domain_name_from_template).
  std::string instance_name_template = virt::kDefaultInstanceNameTemplate;
  // [DEFAULT] default_ephemeral_format: ext3, ext4, vfat or ntfs; "" = by the
  // guest's os_type (disk::ephemeral_filesystem_for).
  std::string default_ephemeral_format;
  // [libvirt] disk_cachemodes' file= mode; "" = default (none, or writeback
  // where the instances path refuses O_DIRECT).
  std::string disk_cache_mode;
  // [libvirt] images_type = rbd and its keys.
  RbdSettings rbd;
  // One sentence per nova.conf key kiln accepted without acting on it, each
  // key once, with the file and line: the caller logs them.
  std::vector<std::string> warnings;
};

// Values given on the command line; they beat the file.
struct Overrides {
  std::optional<std::filesystem::path> config_file;  // else kDefaultConfigFile if it exists
  std::optional<std::string> instances_path;
  std::optional<std::string> glance;  // one endpoint root, or a comma-separated list
  std::optional<std::string> libvirt_uri;
  std::optional<std::string> virt_type;  // --virt-type: [libvirt] virt_type
  std::optional<std::string> socket;  // kilnd/kilnctl --socket: [rpc] unix_socket
};

// Throws kiln::Error kConfigInvalid ("file:line: ...") for a bad file,
// kInvalidArgument for a bad flag, kIoError when a named file is unreadable.
Settings load_settings(const Overrides& overrides);

}  // namespace kiln::config
