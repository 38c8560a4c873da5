#include "kiln/config/settings.h"

#include <arpa/inet.h>

#include <algorithm>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string_view>

#include "kiln/util/error.h"
#include "kiln/util/ini.h"
#include "kiln/util/layout.h"
#include "kiln/util/uuid.h"
#include "kiln/virt/domain_spec.h"

namespace kiln::config {

namespace fs = std::filesystem;

namespace {

std::vector<http::Url> parse_endpoints(const std::string& list) {
  std::vector<http::Url> urls;
  std::stringstream stream(list);
  std::string item;
  while (std::getline(stream, item, ',')) {
    auto first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    auto last = item.find_last_not_of(" \t");
    urls.push_back(http::parse_url(item.substr(first, last - first + 1)));
  }
  if (urls.empty()) throw Error(ErrorCode::kInvalidArgument, "no endpoint given");
  return urls;
}

fs::path parse_absolute_path(const std::string& value) {
  fs::path path(value);
  if (!path.is_absolute()) throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not an absolute path");
  return path.lexically_normal();
}

std::string parse_virt_type(const std::string& value) {
  if (value != "kvm" && value != "qemu") {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not one of kvm, qemu");
  }
  return value;
}

std::string parse_nonempty(const std::string& value) {
  if (value.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
  return value;
}

bool parse_bool(const std::string& value) {
  if (value == "true" || value == "True" || value == "yes" || value == "1") return true;
  if (value == "false" || value == "False" || value == "no" || value == "0") return false;
  throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not true or false");
}

std::uint64_t parse_count(const std::string& value, std::uint64_t maximum) {
  std::size_t used = 0;
  unsigned long long number = 0;
  try {
    number = std::stoull(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (value.empty() || used != value.size() || value[0] == '-' || number > maximum) {
    throw Error(ErrorCode::kInvalidArgument,
                "'" + value + "' is not a whole number between 0 and " + std::to_string(maximum));
  }
  return number;
}

std::uint64_t parse_positive(const std::string& value, std::uint64_t maximum) {
  auto number = parse_count(value, maximum);
  if (number == 0) throw Error(ErrorCode::kInvalidArgument, "'" + value + "' must be at least 1");
  return number;
}

std::set<std::string> parse_list(const std::string& value) {
  std::set<std::string> items;
  std::stringstream stream(value);
  std::string item;
  while (std::getline(stream, item, ',')) {
    auto first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    items.insert(item.substr(first, item.find_last_not_of(" \t") - first + 1));
  }
  if (items.empty()) throw Error(ErrorCode::kInvalidArgument, "the list is empty");
  return items;
}

std::string parse_readable_file(const std::string& value) {
  std::error_code error;
  if (!fs::is_regular_file(value, error)) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not a readable file");
  }
  return value;
}

unsigned parse_mode(const std::string& value) {
  std::size_t used = 0;
  unsigned long mode = 0;
  try {
    mode = std::stoul(value, &used, 8);
  } catch (const std::exception&) {
    used = 0;
  }
  if (value.empty() || used != value.size() || value[0] == '-' || mode > 07777) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not an octal file mode such as 0660");
  }
  return static_cast<unsigned>(mode);
}

// "host:port", "[v6 address]:port"; "" means no TCP listener.
std::optional<ListenAddress> parse_listen(const std::string& value) {
  if (value.empty()) return std::nullopt;
  auto colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not host:port");
  }
  ListenAddress address;
  address.host = value.substr(0, colon);
  if (address.host.front() == '[') {
    if (address.host.back() != ']') throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not [address]:port");
    address.host = address.host.substr(1, address.host.size() - 2);
  }
  std::string port = value.substr(colon + 1);
  std::size_t used = 0;
  unsigned long number = 0;
  try {
    number = std::stoul(port, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (port.empty() || used != port.size() || number == 0 || number > 65535 || address.host.empty()) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not host:port with a port from 1 to 65535");
  }
  address.port = static_cast<std::uint16_t>(number);
  return address;
}

// The combinations of [rpc] and [tls] that would expose the agent.
void check_listeners(const Settings& settings) {
  if (!settings.rpc.listen) return;
  if (settings.rpc.plain_tcp) {
    if (!settings.rpc.listen->is_loopback()) {
      throw Error(ErrorCode::kConfigInvalid, "[rpc] plain_tcp is allowed only when listen is a loopback address, not '" +
                                                 settings.rpc.listen->host + "'");
    }
    return;
  }
  const auto& tls = settings.tls;
  if (tls.cert_file.empty() || tls.key_file.empty() || tls.ca_file.empty()) {
    throw Error(ErrorCode::kConfigInvalid,
                "[rpc] listen needs mutual TLS: set [tls] cert_file, key_file and ca_file (or plain_tcp on loopback)");
  }
}

constexpr std::uint64_t kDay = 86400;
constexpr std::uint64_t kMiB = 1024 * 1024;

glance::KeystoneCredentials& keystone(Settings& settings) {
  if (!settings.keystone) settings.keystone.emplace();
  return *settings.keystone;
}

using Setter = std::function<void(Settings&, const std::string&)>;

// A nova.conf value kiln accepts but cannot act on: said once, kept going.
void warn(Settings& settings, const std::string& sentence) { settings.warnings.push_back(sentence); }

// nova's instance_name_template. nova's default, instance-%08x, numbers
// instances by a database id kiln does not have: such a template is taken
// as kiln's default with a warning, so a pasted nova.conf still loads.
void set_name_template(Settings& s, const std::string& value) {
  static const std::regex numeric(R"(%(\([A-Za-z_]+\))?[-#0 +]*[0-9]*[diouxX])");
  bool has_uuid = value.find("%(uuid)s") != std::string::npos || value.find("%s") != std::string::npos;
  if (!has_uuid && std::regex_search(value, numeric)) {
    warn(s, "instance_name_template '" + value + "' numbers instances by nova's database id; kiln has uuids and uses '" +
                std::string(virt::kDefaultInstanceNameTemplate) + "'");
    s.instance_name_template = virt::kDefaultInstanceNameTemplate;
    return;
  }
  (void)virt::domain_name_from_template(value, "00000000-0000-0000-0000-000000000000");
  s.instance_name_template = value;
}

std::string parse_ephemeral_format(const std::string& value) {
  if (value != "ext3" && value != "ext4" && value != "vfat" && value != "ntfs") {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not one of ext3, ext4, vfat, ntfs (the filesystems kiln formats)");
  }
  return value;
}

// A Ceph pool or Glance store name: printable ASCII without the separators
// of "<pool>/<image>@<snap>" and QEMU's "rbd:" options (see kiln/rbd/location.h).
std::string parse_ceph_name(const std::string& value) {
  if (value.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
  for (unsigned char c : value) {
    if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@' || c == ':' || c == '\\') {
      throw Error(ErrorCode::kInvalidArgument,
                  "'" + value + "' is not a Ceph name kiln uses (printable ASCII without space, / @ : \\)");
    }
  }
  return value;
}

// nova's rbd_user: the id of a client.<id> Ceph user, as librados takes it.
std::string parse_ceph_user(const std::string& value) {
  if (value.rfind("client.", 0) == 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "'" + value + "' names the Ceph user with its type: write the id alone ('" + value.substr(7) + "')");
  }
  if (value.empty() || value.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                           std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not a Ceph user id (letters, digits, _ . -)");
  }
  return value;
}

// nova's "file=directsync,block=none,network=writeback": kiln's disks are all
// files, so only file= applies; other disk types have nothing to act on.
std::string parse_cache_modes(const std::string& value) {
  std::string file_mode;
  std::stringstream stream(value);
  std::string item;
  while (std::getline(stream, item, ',')) {
    auto first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
    auto equals = item.find('=');
    if (equals == std::string::npos) throw Error(ErrorCode::kInvalidArgument, "'" + item + "' is not disk_type=cache_mode");
    std::string type = item.substr(0, equals);
    std::string mode = item.substr(equals + 1);
    bool known = mode == "default";
    for (auto allowed : virt::kCacheModes) known = known || mode == allowed;
    if (!known) {
      throw Error(ErrorCode::kInvalidArgument,
                  "'" + mode + "' is not one of default, none, writeback, writethrough, directsync, unsafe");
    }
    if (type == "file") file_mode = mode == "default" ? "" : mode;
  }
  return file_mode;
}

// nova's manager_interval: seconds, 0 = nova's default periodic interval
// (60 s), -1 = never; kiln's manager_interval_seconds has 0 = never.
std::chrono::seconds parse_nova_interval(const std::string& value) {
  if (value == "-1") return std::chrono::seconds(0);
  auto seconds = parse_count(value, 365 * 86400);
  return std::chrono::seconds(seconds == 0 ? 60 : seconds);
}

// nova's booleans for behaviour kiln always has: true is nova's meaning,
// false is a behaviour kiln does not offer.
Setter always_true(const char* key, const char* why) {
  return [key, why](Settings& s, const std::string& v) {
    if (!parse_bool(v)) warn(s, std::string(key) + " = " + v + " is not supported: " + why);
  };
}

void require_base_directory(Settings&, const std::string& value) {
  // The cache directory's name is part of the host layout every kiln tool
  // and the packaged units agree on; another name would split the cache.
  if (value != layout::kBaseDirectory) {
    throw Error(ErrorCode::kInvalidArgument, "'" + value + "' is not supported: kiln's image cache is <instances_path>/_base");
  }
}

// Every key the file may hold: "section.key" -> how it sets Settings.
const std::map<std::string, Setter>& known_keys() {
  static const std::map<std::string, Setter> keys = {
      {"DEFAULT.instances_path",
       [](Settings& s, const std::string& v) { s.instances_path = parse_absolute_path(v); }},
      // nova.conf's names for what kiln does (README: "nova.conf keys").
      {"DEFAULT.instance_name_template", set_name_template},
      {"DEFAULT.default_ephemeral_format",
       [](Settings& s, const std::string& v) { s.default_ephemeral_format = v.empty() ? "" : parse_ephemeral_format(v); }},
      {"DEFAULT.use_cow_images", always_true("use_cow_images", "kiln always boots from a qcow2 overlay on the base")},
      {"DEFAULT.force_raw_images", always_true("force_raw_images", "kiln always converts bases to raw")},
      {"DEFAULT.image_cache_subdirectory_name", require_base_directory},
      {"image_cache.subdirectory_name", require_base_directory},
      {"DEFAULT.image_cache_manager_interval",
       [](Settings& s, const std::string& v) { s.cache_manager_interval = parse_nova_interval(v); }},
      {"image_cache.manager_interval",
       [](Settings& s, const std::string& v) { s.cache_manager_interval = parse_nova_interval(v); }},
      {"DEFAULT.max_concurrent_builds",
       [](Settings& s, const std::string& v) {
         auto builds = parse_count(v, 1000);  // nova: 0 = unlimited
         s.rpc.max_concurrent_builds = static_cast<unsigned>(builds == 0 ? 1000 : builds);
       }},
      {"libvirt.images_type",
       [](Settings& s, const std::string& v) {
         // Another backend (raw, flat, lvm, ploop) means disks somewhere kiln
         // would not put them: refused rather than silently qcow2.
         if (v != "default" && v != "qcow2" && v != "rbd") {
           throw Error(ErrorCode::kInvalidArgument,
                       "'" + v + "' is not supported: kiln's disks are qcow2 files (default, qcow2) or RBD images (rbd)");
         }
         s.rbd.enabled = v == "rbd";
       }},
      {"libvirt.images_rbd_pool", [](Settings& s, const std::string& v) { s.rbd.pool = parse_ceph_name(v); }},
      {"libvirt.images_rbd_ceph_conf",
       [](Settings& s, const std::string& v) { s.rbd.ceph_conf = parse_absolute_path(v); }},
      {"libvirt.rbd_user", [](Settings& s, const std::string& v) { s.rbd.user = parse_ceph_user(v); }},
      {"libvirt.rbd_secret_uuid",
       [](Settings& s, const std::string& v) { s.rbd.secret_uuid = v.empty() ? "" : normalize_uuid(v); }},
      {"libvirt.images_rbd_glance_store_name",
       [](Settings& s, const std::string& v) { s.rbd.glance_store_name = v.empty() ? "" : parse_ceph_name(v); }},
      {"libvirt.rbd_connect_timeout",
       [](Settings& s, const std::string& v) { s.rbd.connect_timeout = std::chrono::seconds(parse_positive(v, 3600)); }},
      {"libvirt.disk_cachemodes", [](Settings& s, const std::string& v) { s.disk_cache_mode = parse_cache_modes(v); }},
      {"glance.cafile",
       [](Settings& s, const std::string& v) { s.glance_tls.ca_file = parse_readable_file(v); }},
      {"glance.api_servers",
       [](Settings& s, const std::string& v) { s.glance_api_servers = parse_endpoints(v); }},
      {"glance.ca_file",
       [](Settings& s, const std::string& v) { s.glance_tls.ca_file = parse_readable_file(v); }},
      {"glance.insecure",
       [](Settings& s, const std::string& v) { s.glance_tls.verify = !parse_bool(v); }},
      {"glance.auth_token",
       [](Settings& s, const std::string& v) { s.glance_token = parse_nonempty(v); }},
      {"glance.connect_timeout",
       [](Settings& s, const std::string& v) { s.glance_timeouts.connect = std::chrono::seconds(parse_count(v, 3600)); }},
      {"glance.timeout",
       [](Settings& s, const std::string& v) { s.glance_timeouts.idle = std::chrono::seconds(parse_count(v, 3600)); }},
      {"glance.num_retries",
       [](Settings& s, const std::string& v) { s.cache.download_retries = static_cast<unsigned>(parse_count(v, 100)); }},
      {"glance.retry_backoff_ms",
       [](Settings& s, const std::string& v) { s.cache.retry_backoff = std::chrono::milliseconds(parse_count(v, 600000)); }},
      {"glance.image_record_ttl_seconds",
       [](Settings& s, const std::string& v) { s.cache.image_record_ttl = std::chrono::seconds(parse_count(v, 86400)); }},
      {"glance.allowed_disk_formats",
       [](Settings& s, const std::string& v) { s.cache.allowed_disk_formats = parse_list(v); }},
      {"glance.allowed_container_formats",
       [](Settings& s, const std::string& v) { s.cache.allowed_container_formats = parse_list(v); }},
      {"glance.verify_glance_signatures",
       [](Settings& s, const std::string& v) {
         // As in nova: verifying means every image must carry a signature
         // that verifies; an unsigned image is refused, not waved through.
         s.cache.verify_signatures = parse_bool(v);
         s.cache.signatures.required = s.cache.verify_signatures;
       }},
      {"glance.signature_certificate_directory",
       [](Settings& s, const std::string& v) { s.cache.signatures.certificate_directory = parse_absolute_path(v); }},
      {"glance.signature_ca_file",
       [](Settings& s, const std::string& v) { s.cache.signatures.ca_file = parse_readable_file(v); }},
      {"glance.require_image_signatures",
       [](Settings& s, const std::string& v) {
         if (parse_bool(v)) s.cache.verify_signatures = s.cache.signatures.required = true;
       }},
      {"glance.verify_md5_always",
       [](Settings& s, const std::string& v) { s.cache.verify_md5_always = parse_bool(v); }},
      {"image_cache.remove_unused_original_minimum_age_seconds",
       [](Settings& s, const std::string& v) { s.cache.unused_minimum_age = std::chrono::seconds(parse_count(v, 3650 * kDay)); }},
      {"image_cache.remove_unused_base_images",
       [](Settings& s, const std::string& v) { s.cache.remove_unused_base_images = parse_bool(v); }},
      {"image_cache.eviction_minimum_age_seconds",
       [](Settings& s, const std::string& v) { s.cache.eviction_minimum_age = std::chrono::seconds(parse_count(v, 3650 * kDay)); }},
      {"image_cache.lock_timeout_seconds",
       [](Settings& s, const std::string& v) { s.cache.lock_timeout = std::chrono::seconds(parse_positive(v, 7 * kDay)); }},
      {"image_cache.failed_download_ttl_seconds",
       [](Settings& s, const std::string& v) { s.cache.failed_download_ttl = std::chrono::seconds(parse_count(v, 365 * kDay)); }},
      {"image_cache.max_cache_bytes",
       [](Settings& s, const std::string& v) { s.cache.max_cache_bytes = parse_count(v, UINT64_MAX / 2); }},
      {"image_cache.max_download_bytes",
       [](Settings& s, const std::string& v) { s.cache.max_download_bytes = parse_count(v, UINT64_MAX / 2); }},
      {"image_cache.max_cache_percent",
       [](Settings& s, const std::string& v) { s.cache.max_cache_percent = static_cast<unsigned>(parse_count(v, 100)); }},
      {"image_cache.manager_interval_seconds",
       [](Settings& s, const std::string& v) { s.cache_manager_interval = std::chrono::seconds(parse_count(v, 365 * kDay)); }},
      {"rpc.unix_socket", [](Settings& s, const std::string& v) { s.rpc.unix_socket = parse_absolute_path(v); }},
      {"rpc.socket_mode", [](Settings& s, const std::string& v) { s.rpc.socket_mode = parse_mode(v); }},
      {"rpc.socket_group", [](Settings& s, const std::string& v) { s.rpc.socket_group = v; }},
      {"rpc.listen", [](Settings& s, const std::string& v) { s.rpc.listen = parse_listen(v); }},
      {"rpc.plain_tcp", [](Settings& s, const std::string& v) { s.rpc.plain_tcp = parse_bool(v); }},
      {"rpc.max_connections",
       [](Settings& s, const std::string& v) { s.rpc.max_connections = static_cast<unsigned>(parse_positive(v, 100000)); }},
      {"rpc.max_connections_per_peer",
       [](Settings& s, const std::string& v) {
         s.rpc.max_connections_per_peer = static_cast<unsigned>(parse_count(v, 100000));
       }},
      {"rpc.header_timeout_seconds",
       [](Settings& s, const std::string& v) { s.rpc.header_timeout = std::chrono::seconds(parse_positive(v, 3600)); }},
      {"rpc.max_body_bytes", [](Settings& s, const std::string& v) { s.rpc.max_body_bytes = parse_positive(v, 1ULL << 30); }},
      {"rpc.max_header_bytes",
       [](Settings& s, const std::string& v) { s.rpc.max_header_bytes = parse_positive(v, 1ULL << 20); }},
      {"rpc.request_timeout_seconds",
       [](Settings& s, const std::string& v) { s.rpc.request_timeout = std::chrono::seconds(parse_positive(v, 3600)); }},
      {"rpc.max_concurrent_builds",
       [](Settings& s, const std::string& v) { s.rpc.max_concurrent_builds = static_cast<unsigned>(parse_positive(v, 1000)); }},
      {"rpc.max_concurrent_downloads",
       [](Settings& s, const std::string& v) {
         s.rpc.max_concurrent_downloads = static_cast<unsigned>(parse_positive(v, 1000));
       }},
      {"rpc.shutdown_timeout_seconds",
       [](Settings& s, const std::string& v) { s.rpc.shutdown_timeout = std::chrono::seconds(parse_count(v, 86400)); }},
      {"rpc.operation_retention_seconds",
       [](Settings& s, const std::string& v) { s.rpc.operation_retention = std::chrono::seconds(parse_count(v, 30 * kDay)); }},
      {"rpc.max_retained_operations",
       [](Settings& s, const std::string& v) { s.rpc.max_retained_operations = parse_positive(v, 10000000); }},
      {"tls.cert_file", [](Settings& s, const std::string& v) { s.tls.cert_file = parse_readable_file(v); }},
      {"tls.key_file", [](Settings& s, const std::string& v) { s.tls.key_file = parse_readable_file(v); }},
      {"tls.ca_file", [](Settings& s, const std::string& v) { s.tls.ca_file = parse_readable_file(v); }},
      {"image_cache.reserved_space_mb",
       [](Settings& s, const std::string& v) { s.cache.reserved_bytes = parse_count(v, 1ULL << 30) * kMiB; }},
      {"image_safety.vmdk_allowed_types",
       [](Settings& s, const std::string& v) {
         auto types = parse_list(v);
         s.cache.inspector.vmdk_allowed_create_types.assign(types.begin(), types.end());
       }},
      {"image_safety.max_virtual_size_gb",
       [](Settings& s, const std::string& v) { s.cache.inspector.max_virtual_size = parse_count(v, 1ULL << 31) << 30; }},
      {"image_safety.qemu_img_address_space_mb",
       [](Settings& s, const std::string& v) {
         auto mb = parse_count(v, 1ULL << 30);
         s.cache.conversion.resources.address_space_bytes =
             mb == 0 ? std::nullopt : std::optional<std::uint64_t>(mb * kMiB);
       }},
      {"image_safety.qemu_img_cpu_time_seconds",
       [](Settings& s, const std::string& v) {
         auto seconds = parse_count(v, 1ULL << 31);
         s.cache.conversion.resources.cpu_seconds = seconds == 0 ? std::nullopt : std::optional<std::uint64_t>(seconds);
       }},
      {"image_safety.conversion_timeout_seconds",
       [](Settings& s, const std::string& v) { s.cache.conversion.timeout = std::chrono::seconds(parse_count(v, 86400)); }},
      {"keystone.auth_url",
       [](Settings& s, const std::string& v) { keystone(s).auth_url = http::parse_url(v); }},
      {"keystone.auth_type", [](Settings& s, const std::string& v) { keystone(s).auth_type = parse_nonempty(v); }},
      {"keystone.username", [](Settings& s, const std::string& v) { keystone(s).username = parse_nonempty(v); }},
      {"keystone.password", [](Settings& s, const std::string& v) { keystone(s).password = parse_nonempty(v); }},
      {"keystone.user_domain_name",
       [](Settings& s, const std::string& v) { keystone(s).user_domain_name = parse_nonempty(v); }},
      {"keystone.project_name", [](Settings& s, const std::string& v) { keystone(s).project_name = parse_nonempty(v); }},
      {"keystone.project_domain_name",
       [](Settings& s, const std::string& v) { keystone(s).project_domain_name = parse_nonempty(v); }},
      {"keystone.application_credential_id",
       [](Settings& s, const std::string& v) { keystone(s).application_credential_id = parse_nonempty(v); }},
      {"keystone.application_credential_secret",
       [](Settings& s, const std::string& v) { keystone(s).application_credential_secret = parse_nonempty(v); }},
      {"keystone.interface", [](Settings& s, const std::string& v) { keystone(s).interface = parse_nonempty(v); }},
      {"keystone.region_name", [](Settings& s, const std::string& v) { keystone(s).region_name = parse_nonempty(v); }},
      {"keystone.cafile",
       [](Settings& s, const std::string& v) { s.keystone_tls.ca_file = parse_readable_file(v); }},
      {"keystone.insecure", [](Settings& s, const std::string& v) { s.keystone_tls.verify = !parse_bool(v); }},
      {"DEFAULT.host", [](Settings& s, const std::string& v) { s.host = parse_nonempty(v); }},
      {"amqp.url", [](Settings& s, const std::string& v) { s.amqp.url = parse_nonempty(v); }},
      {"amqp.ca_file", [](Settings& s, const std::string& v) { s.amqp.ca_file = parse_readable_file(v); }},
      {"amqp.cert_file", [](Settings& s, const std::string& v) { s.amqp.cert_file = parse_readable_file(v); }},
      {"amqp.key_file", [](Settings& s, const std::string& v) { s.amqp.key_file = parse_readable_file(v); }},
      {"amqp.heartbeat_seconds",
       [](Settings& s, const std::string& v) { s.amqp.heartbeat = std::chrono::seconds(parse_positive(v, 3600)); }},
      {"amqp.report_interval_seconds",
       [](Settings& s, const std::string& v) { s.amqp.report_interval = std::chrono::seconds(parse_positive(v, 3600)); }},
      {"amqp.max_reconnect_backoff_ms",
       [](Settings& s, const std::string& v) { s.amqp.max_reconnect_backoff = std::chrono::milliseconds(parse_positive(v, 600000)); }},
      {"libvirt.connection_uri",
       [](Settings& s, const std::string& v) { s.libvirt_uri = parse_nonempty(v); }},
      {"libvirt.virt_type",
       [](Settings& s, const std::string& v) { s.virt_type = parse_virt_type(v); }},
      {"libvirt.start_timeout_seconds",
       [](Settings& s, const std::string& v) { s.start.timeout = std::chrono::seconds(parse_count(v, 3600)); }},
  };
  return keys;
}

// A constant sorted array, not a std::set: 1140 dynamically built strings
// took clang with ASan most of an hour to compile.
constexpr std::string_view kNovaKeys[] = {
#include "nova_keys.inc"
};
static_assert(std::is_sorted(std::begin(kNovaKeys), std::end(kNovaKeys)), "nova_keys.inc must stay sorted");

bool is_nova_key(const std::string& name) {
  return std::binary_search(std::begin(kNovaKeys), std::end(kNovaKeys), std::string_view(name));
}

void apply_file(Settings& settings, const fs::path& file) {
  IniFile ini = parse_ini_file(file);
  std::set<std::string> warned;
  for (const IniEntry& entry : ini.entries) {
    std::string where = ini.path + ":" + std::to_string(entry.line) + ": ";
    auto it = known_keys().find(entry.section + "." + entry.key);
    if (it == known_keys().end() && is_nova_key(entry.section + "." + entry.key)) {
      if (warned.insert(entry.section + "." + entry.key).second) {
        warn(settings, where + "nova.conf key [" + entry.section + "] " + entry.key + " is not used by kiln; ignored");
      }
      continue;
    }
    if (it == known_keys().end()) {
      throw Error(ErrorCode::kConfigInvalid,
                  where + "unknown key '" + entry.key + "' in [" + entry.section + "]");
    }
    try {
      std::size_t said = settings.warnings.size();
      it->second(settings, entry.value);
      for (std::size_t i = said; i < settings.warnings.size(); ++i) settings.warnings[i] = where + settings.warnings[i];
    } catch (const Error& error) {
      throw Error(ErrorCode::kConfigInvalid,
                  where + "bad value for [" + entry.section + "] " + entry.key + ": " + error.what());
    }
  }
}

// A flag's value, with the flag's name in any error.
template <typename Parse>
auto parse_flag(const char* flag, const std::string& value, Parse parse) {
  try {
    return parse(value);
  } catch (const Error& error) {
    throw Error(ErrorCode::kInvalidArgument, std::string("bad value for ") + flag + ": " + error.what());
  }
}

// What images_type = rbd needs besides its keys' own checks. Only the file
// names are checked here; the cluster is asked when it is first used.
void check_rbd(Settings& settings) {
  const RbdSettings& rbd = settings.rbd;
  if (!rbd.enabled) return;
  if (rbd.secret_uuid.empty()) {
    throw Error(ErrorCode::kConfigInvalid,
                "[libvirt] images_type = rbd needs rbd_secret_uuid: the uuid of the libvirt secret (type ceph) that "
                "holds the key of rbd_user, which QEMU uses to open the disks");
  }
  std::error_code error;
  if (!fs::is_regular_file(rbd.ceph_conf, error)) {
    throw Error(ErrorCode::kConfigInvalid, "[libvirt] images_type = rbd: images_rbd_ceph_conf " +
                                               rbd.ceph_conf.string() + " is not a readable file");
  }
  warn(settings, "[libvirt] images_type = rbd does not boot ISO images or kernel_id/ramdisk_id images yet: they "
                 "are refused");
}

}  // namespace

bool ListenAddress::is_loopback() const {
  if (host == "localhost" || host == "::1") return true;
  in_addr address{};
  return inet_pton(AF_INET, host.c_str(), &address) == 1 && (ntohl(address.s_addr) >> 24) == 127;
}

Settings load_settings(const Overrides& overrides) {
  Settings settings;
  std::error_code error;
  if (overrides.config_file) {
    apply_file(settings, *overrides.config_file);
  } else if (fs::exists(kDefaultConfigFile, error)) {
    apply_file(settings, kDefaultConfigFile);
  }
  if (overrides.instances_path) {
    settings.instances_path = parse_flag("--instances-path", *overrides.instances_path, [](const std::string& v) {
      if (v.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
      return fs::absolute(v).lexically_normal();
    });
  }
  if (overrides.glance) settings.glance_api_servers = parse_flag("--glance", *overrides.glance, parse_endpoints);
  if (settings.keystone && settings.keystone->auth_url.host.empty()) {
    throw Error(ErrorCode::kConfigInvalid, "[keystone] needs auth_url when any of its keys is set");
  }
  if (overrides.libvirt_uri) settings.libvirt_uri = parse_flag("--libvirt-uri", *overrides.libvirt_uri, parse_nonempty);
  if (overrides.virt_type) settings.virt_type = parse_flag("--virt-type", *overrides.virt_type, parse_virt_type);
  if (overrides.socket) {
    settings.rpc.unix_socket = parse_flag("--socket", *overrides.socket, [](const std::string& v) {
      if (v.empty()) throw Error(ErrorCode::kInvalidArgument, "the value is empty");
      return fs::absolute(v).lexically_normal();
    });
  }
  check_listeners(settings);
  check_rbd(settings);
  return settings;
}

}  // namespace kiln::config
