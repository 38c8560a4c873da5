#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <sstream>

#include "assertions.h"
#include "kiln/config/settings.h"
#include "kiln/util/fs.h"
#include "kiln/util/ini.h"
#include "scratch.h"

using kiln::ErrorCode;
using kiln::config::load_settings;
using kiln::config::Overrides;

TEST_CASE("an INI file yields its entries with sections and line numbers") {
  auto ini = kiln::parse_ini_text(
      "# comment\n[DEFAULT]\ninstances_path = /srv/kiln\n\n[glance]\n; other comment\n"
      "api_servers=http://a:9292, http://b:9292\n",
      "kiln.conf");
  REQUIRE(ini.entries.size() == 2);
  REQUIRE(ini.entries[0].section == "DEFAULT");
  REQUIRE(ini.entries[0].value == "/srv/kiln");
  REQUIRE(ini.entries[1].key == "api_servers");
  REQUIRE(ini.entries[1].line == 7);
}

TEST_CASE("INI syntax errors name the file and line") {
  REQUIRE_KILN_ERROR_MENTIONS(kiln::parse_ini_text("[glance\n", "a.conf"), ErrorCode::kConfigInvalid, "a.conf:1:");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::parse_ini_text("key = value\n", "b.conf"), ErrorCode::kConfigInvalid,
                              "b.conf:1: key 'key' appears before any [section]");
  REQUIRE_KILN_ERROR_MENTIONS(kiln::parse_ini_text("[x]\n\njust text\n", "c.conf"), ErrorCode::kConfigInvalid,
                              "c.conf:3:");
}

TEST_CASE("defaults apply when neither file nor flags say otherwise") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "empty.conf", "");
  Overrides overrides;
  overrides.config_file = scratch / "empty.conf";
  auto settings = load_settings(overrides);
  REQUIRE(settings.instances_path == "/var/lib/kiln/instances");
  REQUIRE(settings.libvirt_uri == "qemu:///system");
  REQUIRE(settings.glance_api_servers.empty());
  REQUIRE(settings.virt_type.empty());
  REQUIRE(settings.cache.image_record_ttl == std::chrono::seconds(0));
}

TEST_CASE("a flag beats the file and the file beats the default") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "kiln.conf",
                         "[DEFAULT]\ninstances_path = /srv/from-file\n[glance]\n"
                         "api_servers = http://10.0.0.1:9292,http://10.0.0.2:9292\n"
                         "image_record_ttl_seconds = 300\n"
                         "[libvirt]\nconnection_uri = qemu+ssh://h/system\nvirt_type = qemu\n");
  Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  auto from_file = load_settings(overrides);
  REQUIRE(from_file.cache.image_record_ttl == std::chrono::seconds(300));
  REQUIRE(from_file.instances_path == "/srv/from-file");
  REQUIRE(from_file.glance_api_servers.size() == 2);
  REQUIRE(from_file.glance_api_servers[1].host == "10.0.0.2");
  REQUIRE(from_file.libvirt_uri == "qemu+ssh://h/system");
  REQUIRE(from_file.virt_type == "qemu");

  overrides.instances_path = "/srv/from-flag";
  overrides.glance = "http://127.0.0.1:9999";
  overrides.libvirt_uri = "test:///default";
  auto from_flags = load_settings(overrides);
  REQUIRE(from_flags.instances_path == "/srv/from-flag");
  REQUIRE(from_flags.glance_api_servers.size() == 1);
  REQUIRE(from_flags.glance_api_servers[0].port == "9999");
  REQUIRE(from_flags.libvirt_uri == "test:///default");
  REQUIRE(from_flags.virt_type == "qemu");
}

TEST_CASE("unknown keys and bad values are refused with file, line and key") {
  kiln::test::ScratchDir scratch;
  auto refuse = [&](const std::string& text, const std::string& fragment) {
    kiln::test::write_text(scratch / "kiln.conf", text);
    Overrides overrides;
    overrides.config_file = scratch / "kiln.conf";
    REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, fragment);
  };
  refuse("[DEFAULT]\ninstance_path = /x\n", "kiln.conf:2: unknown key 'instance_path' in [DEFAULT]");
  refuse("[glance]\n\napi_servers = ftp://x\n", "kiln.conf:3: bad value for [glance] api_servers");
  refuse("[DEFAULT]\ninstances_path = relative/dir\n", "kiln.conf:2: bad value for [DEFAULT] instances_path");
  refuse("[libvirt]\nvirt_type = xen\n", "kiln.conf:2: bad value for [libvirt] virt_type");
  refuse("[imagecache]\nx = 1\n", "kiln.conf:2: unknown key 'x' in [imagecache]");
}

TEST_CASE("a bad flag value names the flag") {
  Overrides overrides;
  overrides.config_file = "/dev/null";
  overrides.glance = "127.0.0.1:9292";
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kInvalidArgument, "--glance");
}

TEST_CASE("a missing config file given by flag is an error") {
  Overrides overrides;
  overrides.config_file = "/nonexistent/kiln.conf";
  REQUIRE_KILN_ERROR(load_settings(overrides), ErrorCode::kIoError);
}

TEST_CASE("the sample config documents only keys kiln accepts") {
  Overrides overrides;
  overrides.config_file = KILN_SOURCE_DIR "/systemd/kiln.conf.sample";
  auto settings = load_settings(overrides);
  REQUIRE(settings.instances_path == "/var/lib/kiln/instances");
  REQUIRE(settings.glance_api_servers.size() == 1);
}

TEST_CASE("every commented key of the sample config is a key kiln accepts") {
  // Uncomment every "# key = value" line and load it: a key the sample
  // documents but kiln refuses would fail here with its line number.
  std::string text = kiln::read_file(KILN_SOURCE_DIR "/systemd/kiln.conf.sample");
  std::string uncommented;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    bool commented_key = line.rfind("# ", 0) == 0 && line.find(" = ") != std::string::npos &&
                         line.find(' ', 2) == line.find(" = ");
    if (!commented_key) {
      uncommented += line + "\n";
      continue;
    }
    std::string key_value = line.substr(2);
    // Empty values and paths that do not exist here are replaced by ones that parse.
    if (key_value.back() == '=' || key_value.back() == ' ') continue;
    if (key_value.find("/etc/kiln/") != std::string::npos) continue;
    uncommented += key_value + "\n";
  }
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "kiln.conf", uncommented);
  Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  auto settings = load_settings(overrides);
  REQUIRE(settings.keystone.has_value());
  REQUIRE(settings.cache.download_retries == 3);
  REQUIRE(settings.cache.inspector.vmdk_allowed_create_types.size() == 2);
}

TEST_CASE("the agent's [rpc] and [tls] keys have their defaults and parse from the file") {
  kiln::test::ScratchDir scratch;
  Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  kiln::test::write_text(scratch / "kiln.conf", "[DEFAULT]\ninstances_path = /srv/kiln\n");
  auto defaults = load_settings(overrides);
  REQUIRE(defaults.rpc.unix_socket == "/run/kiln/kiln.sock");
  REQUIRE(defaults.rpc.socket_mode == 0660);
  REQUIRE(!defaults.rpc.listen);
  REQUIRE(defaults.rpc.max_concurrent_builds == 10);
  REQUIRE(defaults.rpc.max_concurrent_downloads == 4);
  REQUIRE(defaults.rpc.max_body_bytes == 1048576);
  REQUIRE(defaults.rpc.request_timeout == std::chrono::seconds(30));
  REQUIRE(defaults.rpc.shutdown_timeout == std::chrono::seconds(60));
  REQUIRE(defaults.rpc.operation_retention == std::chrono::seconds(3600));
  REQUIRE(defaults.rpc.max_retained_operations == 10000);
  REQUIRE(defaults.cache_manager_interval == std::chrono::seconds(2400));

  kiln::test::write_text(scratch / "kiln.conf",
                         "[rpc]\nunix_socket = /tmp/k.sock\nsocket_mode = 0600\nlisten = 127.0.0.1:8775\n"
                         "plain_tcp = true\nmax_connections = 7\noperation_retention_seconds = 0\n"
                         "max_retained_operations = 50\n[image_cache]\nmanager_interval_seconds = 0\n");
  auto settings = load_settings(overrides);
  REQUIRE(settings.rpc.unix_socket == "/tmp/k.sock");
  REQUIRE(settings.rpc.socket_mode == 0600);
  REQUIRE(settings.rpc.listen->host == "127.0.0.1");
  REQUIRE(settings.rpc.listen->port == 8775);
  REQUIRE(settings.rpc.max_connections == 7);
  REQUIRE(settings.rpc.operation_retention == std::chrono::seconds(0));
  REQUIRE(settings.rpc.max_retained_operations == 50);
  REQUIRE(settings.cache_manager_interval == std::chrono::seconds(0));
  overrides.socket = "/tmp/flag.sock";
  REQUIRE(load_settings(overrides).rpc.unix_socket == "/tmp/flag.sock");
}

TEST_CASE("TCP without mutual TLS is refused unless plain and on loopback") {
  kiln::test::ScratchDir scratch;
  Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  kiln::test::write_text(scratch / "kiln.conf", "[rpc]\nlisten = 0.0.0.0:8775\nplain_tcp = true\n");
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, "loopback");
  kiln::test::write_text(scratch / "kiln.conf", "[rpc]\nlisten = [::1]:8775\n");
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, "mutual TLS");
  kiln::test::write_text(scratch / "kiln.conf", "[rpc]\nsocket_mode = 0999\n");
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, "kiln.conf:2");
  kiln::test::write_text(scratch / "kiln.conf", "[rpc]\nlisten = nohost\n");
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, "host:port");
  kiln::test::write_text(scratch / "kiln.conf", "[rpc]\nmax_concurrent_builds = 0\n");
  REQUIRE_KILN_ERROR_MENTIONS(load_settings(overrides), ErrorCode::kConfigInvalid, "max_concurrent_builds");
}

namespace {

kiln::config::Settings load_text(kiln::test::ScratchDir& scratch, const std::string& text) {
  kiln::test::write_text(scratch / "kiln.conf", text);
  Overrides overrides;
  overrides.config_file = scratch / "kiln.conf";
  return load_settings(overrides);
}

}  // namespace

TEST_CASE("a nova.conf assembled from nova's own sample loads with warnings only") {
  // tests/data/nova-sample.conf: [DEFAULT], [glance], [image_cache] and
  // [libvirt] of oslo-config-generator's nova sample, every default set.
  Overrides overrides;
  overrides.config_file = KILN_SOURCE_DIR "/tests/data/nova-sample.conf";
  auto settings = load_settings(overrides);
  REQUIRE(settings.instances_path == "/var/lib/nova/instances");
  REQUIRE(settings.cache_manager_interval == std::chrono::seconds(2400));
  REQUIRE(settings.rpc.max_concurrent_builds == 10);
  REQUIRE(settings.cache.download_retries == 3);
  REQUIRE(settings.instance_name_template == "instance-%(uuid)s");
  REQUIRE(settings.warnings.size() > 100);  // the options kiln does not implement, each named
  std::set<std::string> seen;
  bool name_template_warned = false;
  for (const auto& warning : settings.warnings) {
    INFO(warning);
    auto at = warning.find("nova-sample.conf:");
    REQUIRE(at != std::string::npos);  // file and line
    REQUIRE(seen.insert(warning.substr(warning.find(": ", at) + 2)).second);  // one warning per key
    name_template_warned = name_template_warned || warning.find("instance-%08x") != std::string::npos;
  }
  REQUIRE(name_template_warned);
}

TEST_CASE("an unimplemented nova.conf key is accepted with one warning naming file, line and key") {
  kiln::test::ScratchDir scratch;
  auto settings = load_text(scratch, "[DEFAULT]\ndebug = true\n[oslo_messaging_rabbit]\nheartbeat_rate = 3\n");
  REQUIRE(settings.warnings.size() == 2);
  REQUIRE(settings.warnings[0].ends_with("kiln.conf:2: nova.conf key [DEFAULT] debug is not used by kiln; ignored"));
  REQUIRE(settings.warnings[1].find("kiln.conf:4: nova.conf key [oslo_messaging_rabbit] heartbeat_rate") !=
          std::string::npos);
  // Not nova's either: still a typo, refused.
  REQUIRE_KILN_ERROR_MENTIONS(load_text(scratch, "[DEFAULT]\ndebgu = true\n"), ErrorCode::kConfigInvalid,
                              "unknown key 'debgu'");
}

TEST_CASE("nova.conf's names set kiln's settings with nova's meaning") {
  kiln::test::ScratchDir scratch;
  // manager_interval: 0 = nova's default periodic interval (60 s), -1 = off.
  REQUIRE(load_text(scratch, "[image_cache]\nmanager_interval = 0\n").cache_manager_interval == std::chrono::seconds(60));
  REQUIRE(load_text(scratch, "[image_cache]\nmanager_interval = -1\n").cache_manager_interval == std::chrono::seconds(0));
  REQUIRE(load_text(scratch, "[DEFAULT]\nimage_cache_manager_interval = 300\n").cache_manager_interval ==
          std::chrono::seconds(300));
  REQUIRE(load_text(scratch, "[DEFAULT]\nmax_concurrent_builds = 0\n").rpc.max_concurrent_builds == 1000);
  kiln::test::write_text(scratch / "ca.pem", "x");
  REQUIRE(load_text(scratch, "[glance]\ncafile = " + (scratch / "ca.pem").string() + "\n").glance_tls.ca_file ==
          (scratch / "ca.pem").string());
  REQUIRE(load_text(scratch, "[libvirt]\ndisk_cachemodes = block=none, file=writethrough\n").disk_cache_mode ==
          "writethrough");
  REQUIRE(load_text(scratch, "[libvirt]\ndisk_cachemodes = file=default\n").disk_cache_mode == "");
  REQUIRE(load_text(scratch, "[libvirt]\nimages_type = qcow2\n").warnings.empty());
  REQUIRE(load_text(scratch, "[DEFAULT]\ndefault_ephemeral_format = vfat\n").default_ephemeral_format == "vfat");
  REQUIRE(load_text(scratch, "[DEFAULT]\ninstance_name_template = vm-%s\n").instance_name_template == "vm-%s");
  REQUIRE(load_text(scratch, "[image_cache]\nsubdirectory_name = _base\n").warnings.empty());
  auto cow = load_text(scratch, "[DEFAULT]\nuse_cow_images = false\n");
  REQUIRE(cow.warnings.size() == 1);
  REQUIRE(cow.warnings[0].find("kiln.conf:2: use_cow_images = false is not supported") != std::string::npos);

  auto refuse = [&](const std::string& text, const std::string& fragment) {
    REQUIRE_KILN_ERROR_MENTIONS(load_text(scratch, text), ErrorCode::kConfigInvalid, fragment);
  };
  refuse("[libvirt]\nimages_type = lvm\n", "kiln.conf:2: bad value for [libvirt] images_type");
  refuse("[libvirt]\ndisk_cachemodes = file=fast\n", "bad value for [libvirt] disk_cachemodes");
  refuse("[image_cache]\nsubdirectory_name = _cache\n", "bad value for [image_cache] subdirectory_name");
  refuse("[DEFAULT]\ndefault_ephemeral_format = xfs\n", "bad value for [DEFAULT] default_ephemeral_format");
  refuse("[DEFAULT]\ninstance_name_template = vm\n", "exactly once");  // every domain the same name
  refuse("[DEFAULT]\ninstance_name_template = %(uuid)s-%s\n", "exactly once");
  refuse("[DEFAULT]\ninstance_name_template = vm-%(hostname)s-%s\n", "conversion");
}

TEST_CASE("images_type = rbd takes nova's RBD keys with nova's defaults, and refuses what could not work") {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "ceph.conf", "[global]\n");
  const std::string conf = "images_rbd_ceph_conf = " + (scratch / "ceph.conf").string() + "\n";

  auto defaults = load_text(scratch, "[DEFAULT]\n");
  REQUIRE_FALSE(defaults.rbd.enabled);  // local qcow2 files stay the default
  REQUIRE(defaults.rbd.pool == "rbd");
  REQUIRE(defaults.rbd.ceph_conf == "/etc/ceph/ceph.conf");
  REQUIRE(defaults.rbd.user == "");
  REQUIRE(defaults.rbd.connect_timeout == std::chrono::seconds(5));

  auto rbd = load_text(scratch, "[libvirt]\nimages_type = rbd\nimages_rbd_pool = vms\n" + conf +
                                    "rbd_user = nova\nrbd_secret_uuid = 457EB676-33DA-42EC-9A8C-9293D545C337\n"
                                    "images_rbd_glance_store_name = ceph-1\nrbd_connect_timeout = 10\n");
  REQUIRE(rbd.rbd.enabled);
  REQUIRE(rbd.rbd.pool == "vms");
  REQUIRE(rbd.rbd.ceph_conf == scratch / "ceph.conf");
  REQUIRE(rbd.rbd.user == "nova");
  REQUIRE(rbd.rbd.secret_uuid == "457eb676-33da-42ec-9a8c-9293d545c337");
  REQUIRE(rbd.rbd.glance_store_name == "ceph-1");
  REQUIRE(rbd.rbd.connect_timeout == std::chrono::seconds(10));
  // Accepted, with what it does not boot yet said once.
  REQUIRE(rbd.warnings.size() == 1);
  REQUIRE(rbd.warnings[0].find("images_type = rbd does not boot ISO images or kernel_id/ramdisk_id images yet") !=
          std::string::npos);
  // The keys alone, with the default backend, are nova's keys kiln keeps, with no warning.
  REQUIRE(load_text(scratch, "[libvirt]\nimages_rbd_pool = vms\nrbd_user = nova\n").warnings.empty());

  auto refuse = [&](const std::string& text, const std::string& fragment) {
    REQUIRE_KILN_ERROR_MENTIONS(load_text(scratch, text), ErrorCode::kConfigInvalid, fragment);
  };
  refuse("[libvirt]\nimages_type = rbd\n" + conf, "needs rbd_secret_uuid");
  refuse("[libvirt]\nimages_type = rbd\nrbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337\n"
         "images_rbd_ceph_conf = /nonexistent/ceph.conf\n",
         "/nonexistent/ceph.conf is not a readable file");
  refuse("[libvirt]\nrbd_secret_uuid = 457eb676-33da-42ec-9a8c\n", "bad value for [libvirt] rbd_secret_uuid");
  refuse("[libvirt]\nrbd_user = client.nova\n", "write the id alone ('nova')");
  refuse("[libvirt]\nrbd_user = no va\n", "bad value for [libvirt] rbd_user");
  refuse("[libvirt]\nimages_rbd_pool = vms/x\n", "bad value for [libvirt] images_rbd_pool");
  refuse("[libvirt]\nimages_rbd_pool = vms@x\n", "bad value for [libvirt] images_rbd_pool");
  refuse("[libvirt]\nimages_rbd_pool =\n", "bad value for [libvirt] images_rbd_pool");
  refuse("[libvirt]\nimages_rbd_ceph_conf = ceph.conf\n", "bad value for [libvirt] images_rbd_ceph_conf");
  refuse("[libvirt]\nrbd_connect_timeout = 0\n", "bad value for [libvirt] rbd_connect_timeout");
  refuse("[libvirt]\nimages_rbd_glance_store_name = a:b\n", "bad value for [libvirt] images_rbd_glance_store_name");
}
