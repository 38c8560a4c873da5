// kilnd as an operator runs it, against the real Glance and libvirtd the
// `peers` fixture started: boot, follow the operation, show, delete over the
// socket; idempotent boots; 50 boots of one image download it once; mutual
// TLS; systemd's notify protocol; SIGTERM mid-boot and the next start.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <future>
#include <set>
#include <thread>

#include "kiln/cache/image_cache.h"
#include "kiln/util/subprocess.h"
#include "kilnd_host.h"
#include "kilnd_process.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

using Host = kiln::test::KilndHost;
using kiln::test::small_image;

json boot_body(const std::string& uuid, const std::string& image_id, bool start = true) {
  return {{"uuid", uuid}, {"image_id", image_id}, {"start", start},
          {"flavor", {{"vcpus", 1}, {"memory_mb", 64}, {"root_gb", 1}, {"swap_mb", 0}}}};
}

std::string domain_state(const std::string& uuid) {
  auto result = kiln::test::virsh({"domstate", uuid});
  return result.exit_code == 0 ? result.out.substr(0, result.out.find('\n')) : "absent";
}

// Everything kilnd receives on NOTIFY_SOCKET, as systemd would.
class NotifySocket {
 public:
  explicit NotifySocket(fs::path path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval timeout{0, 200000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~NotifySocket() { ::close(fd_); }
  // Reads datagrams until one contains `state` (e.g. "READY=1") or `timeout` passes.
  bool wait_for(const std::string& state, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) continue;
      std::string message(buffer, static_cast<std::size_t>(n));
      received_.push_back(message);
      if (message.find(state) != std::string::npos) return true;
    }
    return false;
  }
  std::string all() const {
    std::string text;
    for (const auto& m : received_) text += m + " | ";
    return text;
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::vector<std::string> received_;
};

unsigned short free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

void openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  kiln::run_checked(kiln::Command(args));
}

// A CA and a certificate it signs for `name` (an IP SAN for the server).
void make_ca(const fs::path& dir, const std::string& ca) {
  openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + ca, "-keyout",
           (dir / (ca + ".key")).string(), "-out", (dir / (ca + ".pem")).string()});
}

void make_certificate(const fs::path& dir, const std::string& ca, const std::string& name, bool server) {
  auto key = (dir / (name + ".key")).string();
  auto request = (dir / (name + ".csr")).string();
  auto extensions = dir / (name + ".ext");
  kiln::test::write_text(extensions, server ? "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                                            : "extendedKeyUsage=clientAuth\n");
  openssl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", key, "-out", request});
  openssl({"x509", "-req", "-in", request, "-CA", (dir / (ca + ".pem")).string(), "-CAkey",
           (dir / (ca + ".key")).string(), "-CAcreateserial", "-days", "2", "-extfile", extensions.string(), "-out",
           (dir / (name + ".pem")).string()});
}

}  // namespace

TEST_CASE("kilnd boots an instance over its socket, shows it running, and deletes it") {
  Host host;
  std::string image_id = small_image(host, "kilnd-boot");
  kiln::test::KilndProcess kilnd(host.config(), host.socket);
  REQUIRE(kilnd.wait_ready());
  auto client = kilnd.client();
  std::string uuid = kiln::test::random_uuid();

  auto accepted = client.call("POST", "/v1/instances", boot_body(uuid, image_id));
  INFO(accepted.body.dump());
  REQUIRE(accepted.status == 202);
  std::string operation_id = accepted.body["operation_id"];
  REQUIRE(accepted.location == "/v1/operations/" + operation_id);
  auto operation = client.wait_operation(operation_id, 120s);
  INFO(operation.dump());
  REQUIRE(operation["state"] == "succeeded");
  REQUIRE(operation["result"]["domain"]["state"] == "running");
  REQUIRE(operation["bytes_total"].get<std::uint64_t>() > 0);

  auto shown = client.call("GET", "/v1/instances/" + uuid);
  REQUIRE(shown.status == 200);
  REQUIRE(shown.body["domain"]["state"] == "running");
  REQUIRE(shown.body["disks"][0]["backing_chain"].size() == 2);
  REQUIRE(domain_state(uuid) == "running");
  auto listed = client.call("GET", "/v1/instances");
  REQUIRE(listed.body["instances"].size() == 1);
  auto cached = client.call("GET", "/v1/cache");
  REQUIRE(cached.body["bases"].size() == 1);
  REQUIRE(cached.body["bases"][0]["image_id"] == image_id);

  auto deleting = client.call("DELETE", "/v1/instances/" + uuid);
  REQUIRE(deleting.status == 202);
  auto deleted = client.wait_operation(deleting.body["operation_id"], 60s);
  REQUIRE(deleted["state"] == "succeeded");
  REQUIRE(deleted["result"]["domain_found"] == true);
  REQUIRE(!fs::exists(host.instances / uuid));
  REQUIRE(domain_state(uuid) == "absent");
  REQUIRE(client.call("GET", "/v1/instances/" + uuid).status == 404);

  auto metrics = client.call("GET", "/metrics");
  REQUIRE(metrics.body.get<std::string>().find("kiln_boots_total 1\n") != std::string::npos);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
  REQUIRE(!fs::exists(host.socket));
}

TEST_CASE("the same boot twice is the same operation, and a different body for that uuid is 409") {
  Host host;
  std::string image_id = small_image(host, "kilnd-idempotent");
  kiln::test::KilndProcess kilnd(host.config(), host.socket);
  REQUIRE(kilnd.wait_ready());
  auto client = kilnd.client();
  std::string uuid = kiln::test::random_uuid();
  auto first = client.call("POST", "/v1/instances", boot_body(uuid, image_id, false));
  auto again = client.call("POST", "/v1/instances", boot_body(uuid, image_id, false));
  REQUIRE(first.status == 202);
  REQUIRE(again.status == 202);
  REQUIRE(again.body["operation_id"] == first.body["operation_id"]);
  auto changed = boot_body(uuid, image_id, false);
  changed["flavor"]["vcpus"] = 2;
  auto conflict = client.call("POST", "/v1/instances", changed);
  REQUIRE(conflict.status == 409);
  REQUIRE(conflict.body["error"]["code"] == "conflict");
  REQUIRE(client.wait_operation(first.body["operation_id"], 120s)["state"] == "succeeded");
  // Done, and asked again: still the same operation, nothing booted twice.
  REQUIRE(client.call("POST", "/v1/instances", boot_body(uuid, image_id, false)).body["operation_id"] ==
          first.body["operation_id"]);
  REQUIRE(domain_state(uuid) == "shut off");
  REQUIRE(client.wait_operation(client.call("DELETE", "/v1/instances/" + uuid).body["operation_id"], 60s)["state"] ==
          "succeeded");
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("50 concurrent boots of one image over the socket all succeed and download it once") {
  Host host;
  std::string image_id = small_image(host, "kilnd-popular");
  kiln::test::FaultProxy proxy;
  kiln::test::KilndProcess kilnd(host.config(proxy.url()), host.socket);
  REQUIRE(kilnd.wait_ready());
  std::vector<std::string> uuids;
  for (int i = 0; i < 50; ++i) uuids.push_back(kiln::test::random_uuid());
  std::vector<std::future<json>> boots;
  for (const auto& uuid : uuids) {
    boots.push_back(std::async(std::launch::async, [&, uuid] {
      auto client = kilnd.client();
      auto accepted = client.call("POST", "/v1/instances", boot_body(uuid, image_id, false));
      if (accepted.status != 202) return accepted.body;
      return client.wait_operation(accepted.body["operation_id"], 300s);
    }));
  }
  int succeeded = 0;
  for (auto& boot : boots) {
    auto operation = boot.get();
    INFO(operation.dump());
    if (operation["state"] == "succeeded") ++succeeded;
  }
  REQUIRE(succeeded == 50);
  REQUIRE(proxy.downloads() == 1);
  auto client = kilnd.client();
  REQUIRE(client.call("GET", "/v1/instances").body["instances"].size() == 50);
  std::vector<std::string> deletes;
  for (const auto& uuid : uuids) deletes.push_back(client.call("DELETE", "/v1/instances/" + uuid).body["operation_id"]);
  for (const auto& id : deletes) REQUIRE(client.wait_operation(id, 300s)["state"] == "succeeded");
  REQUIRE(client.call("GET", "/v1/instances").body["instances"].empty());
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("a boot request carrying Glance's image record boots a cached image without a Glance request") {
  Host host;
  std::string image_id = small_image(host, "kilnd-offered");
  kiln::test::FaultProxy proxy;
  kiln::test::KilndProcess kilnd(host.config(proxy.url()), host.socket);
  REQUIRE(kilnd.wait_ready());
  auto client = kilnd.client();
  auto glance_requests = [&] { return proxy.requests().size(); };
  // The controller's copy, as nova passes image_meta (read past the proxy).
  json record = kiln::test::image_record(image_id);
  auto boot = [&](const json& image) {
    json body = boot_body(kiln::test::random_uuid(), image_id, false);
    body["image"] = image;
    auto accepted = client.call("POST", "/v1/instances", body);
    INFO(accepted.body.dump());
    REQUIRE(accepted.status == 202);
    auto operation = client.wait_operation(accepted.body["operation_id"], 120s);
    INFO(operation.dump());
    REQUIRE(operation["state"] == "succeeded");
  };

  boot(record);  // cold: the record and the data come from Glance
  auto after_cold = glance_requests();
  REQUIRE(proxy.downloads() == 1);
  boot(record);  // warm: nothing asked
  boot(record);
  REQUIRE(glance_requests() == after_cold);
  json other_digest = record;
  other_digest["os_hash_value"] = std::string(128, 'f');
  boot(other_digest);  // disagrees with the cached base: Glance is asked, nothing downloaded
  REQUIRE(glance_requests() == after_cold + 1);
  REQUIRE(proxy.downloads() == 1);

  json body = boot_body(kiln::test::random_uuid(), image_id, false);
  body["image"] = record;
  body["image"]["id"] = kiln::test::random_uuid();
  auto refused = client.call("POST", "/v1/instances", body);
  INFO(refused.body.dump());
  REQUIRE(refused.status == 400);
  REQUIRE(refused.body["error"]["pointer"] == "/image/id");
  body["image"] = {{"id", image_id}};  // not a record: the schema wants status and formats
  REQUIRE(client.call("POST", "/v1/instances", body).status == 400);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("TCP with mutual TLS refuses clients without a certificate or with another CA's, and serves the right one") {
  Host host;
  fs::path pki = host.scratch / "pki";
  fs::create_directories(pki);
  make_ca(pki, "kiln-ca");
  make_ca(pki, "other-ca");
  make_certificate(pki, "kiln-ca", "server", true);
  make_certificate(pki, "kiln-ca", "controller", false);
  make_certificate(pki, "other-ca", "intruder", false);
  unsigned short port = free_tcp_port();
  std::string extra = "listen = 127.0.0.1:" + std::to_string(port) + "\n[tls]\ncert_file = " + (pki / "server.pem").string() +
                      "\nkey_file = " + (pki / "server.key").string() + "\nca_file = " + (pki / "kiln-ca.pem").string() + "\n";
  kiln::test::KilndProcess kilnd(host.config(kiln::test::peers().glance_url, extra), host.socket);
  REQUIRE(kilnd.wait_ready());
  std::string url = "https://127.0.0.1:" + std::to_string(port) + "/healthz";
  auto curl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                                     "--cacert", (pki / "kiln-ca.pem").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(url);
    return kiln::run(kiln::Command(argv));
  };
  auto without = curl({});
  REQUIRE(without.exit_code != 0);
  auto intruder = curl({"--cert", (pki / "intruder.pem").string(), "--key", (pki / "intruder.key").string()});
  REQUIRE(intruder.exit_code != 0);
  auto controller = curl({"--cert", (pki / "controller.pem").string(), "--key", (pki / "controller.key").string()});
  INFO(controller.err);
  REQUIRE(controller.exit_code == 0);
  REQUIRE(controller.out == "200");
  auto plain = kiln::run(kiln::Command({"curl", "-s", "--max-time", "10", "http://127.0.0.1:" + std::to_string(port) + "/healthz"}));
  REQUIRE(plain.out.find("\"ok\"") == std::string::npos);
  REQUIRE(kilnd.log().find("TLS handshake") != std::string::npos);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("systemd sees READY=1, WATCHDOG=1 and, after SIGTERM, STOPPING=1") {
  Host host;
  NotifySocket notify(host.scratch / "notify.sock");
  kiln::test::KilndProcess kilnd(host.config(), host.socket,
                                 {{"NOTIFY_SOCKET", (host.scratch / "notify.sock").string()}, {"WATCHDOG_USEC", "400000"}});
  REQUIRE(notify.wait_for("READY=1", 30s));
  REQUIRE(kilnd.wait_ready());
  REQUIRE(notify.wait_for("WATCHDOG=1", 5s));
  REQUIRE(notify.wait_for("WATCHDOG=1", 5s));
  ::kill(kilnd.pid(), SIGTERM);
  INFO(notify.all());
  REQUIRE(notify.wait_for("STOPPING=1", 10s));
  REQUIRE(kilnd.wait_exit(30s) == 0);
}

TEST_CASE("a second kilnd on the same instances path or socket refuses to start and names the holder") {
  Host host;
  kiln::test::KilndProcess first(host.config(), host.socket);
  REQUIRE(first.wait_ready());

  kiln::test::ScratchDir other;
  auto same_path = kiln::test::write_kilnd_config(other.path(), host.instances, kiln::test::peers().glance_url,
                                                  kiln::test::peers().libvirt_uri, other / "other.sock");
  kiln::test::KilndProcess second(same_path, other / "other.sock");
  REQUIRE(second.wait_exit(30s) == 1);
  INFO(second.log());
  REQUIRE(second.log().find("kilnd: error [already_running]") != std::string::npos);
  REQUIRE(second.log().find("pid " + std::to_string(first.pid())) != std::string::npos);

  kiln::test::ScratchDir third_dir;
  auto same_socket = kiln::test::write_kilnd_config(third_dir.path(), third_dir / "instances",
                                                    kiln::test::peers().glance_url, kiln::test::peers().libvirt_uri,
                                                    host.socket);
  kiln::test::KilndProcess third(same_socket, host.socket);
  REQUIRE(third.wait_exit(30s) == 1);
  INFO(third.log());
  REQUIRE(third.log().find("another agent answers on " + host.socket.string()) != std::string::npos);
  REQUIRE(first.client().call("GET", "/healthz").status == 200);
  REQUIRE(first.stop(SIGTERM) == 0);
}

TEST_CASE("SIGTERM during a boot leaves a state the next kilnd start reconciles") {
  Host host;
  kiln::test::ScratchDir images;
  std::string image_id = kiln::test::upload_image("kilnd-sigterm", "raw", kiln::test::make_interruptible_raw(images.path()));
  kiln::test::FaultProxy proxy({"--stall", std::to_string(2 * 1024 * 1024), "--times", "1"});
  std::string extra = "shutdown_timeout_seconds = 1\n";
  std::string uuid = kiln::test::random_uuid();
  {
    kiln::test::KilndProcess kilnd(host.config(proxy.url(), extra), host.socket);
    REQUIRE(kilnd.wait_ready());
    auto client = kilnd.client();
    auto accepted = client.call("POST", "/v1/instances", boot_body(uuid, image_id, false));
    REQUIRE(accepted.status == 202);
    // Wait until the download is under way, then stop the agent.
    json operation;
    for (int i = 0; i < 200; ++i) {
      operation = client.call("GET", "/v1/operations/" + accepted.body["operation_id"].get<std::string>()).body;
      if (operation["bytes_done"].get<std::uint64_t>() > 0) break;
      std::this_thread::sleep_for(50ms);
    }
    INFO(operation.dump());
    REQUIRE(operation["state"] == "running");
    REQUIRE(operation["bytes_done"].get<std::uint64_t>() > 0);
    REQUIRE(kilnd.stop(SIGTERM, 30s) == 0);
    INFO(kilnd.log());
    REQUIRE(kilnd.log().find("operations still running") != std::string::npos);
  }
  auto base = host.instances / "_base" / kiln::cache::base_name_for(image_id);
  REQUIRE(!fs::exists(base));  // nothing half-written under the final name
  REQUIRE(fs::exists(base.string() + ".part"));  // the stop really came mid-download

  kiln::test::KilndProcess next(host.config(proxy.url()), host.socket);
  REQUIRE(next.wait_ready());
  INFO(next.log());
  // Whatever the stop left (a .part download) is cleaned up by the start's reconcile.
  for (const auto& entry : fs::directory_iterator(host.instances / "_base")) {
    INFO(entry.path());
    REQUIRE(entry.path().extension() != ".part");
    REQUIRE(entry.path().extension() != ".converted");
  }
  REQUIRE(!fs::exists(host.instances / uuid));
  // And the boot asked again now succeeds from a clean state.
  auto client = next.client();
  auto again = client.wait_operation(client.call("POST", "/v1/instances", boot_body(uuid, image_id, false)).body["operation_id"], 300s);
  INFO(again.dump());
  REQUIRE(again["state"] == "succeeded");
  REQUIRE(fs::exists(base));
  REQUIRE(client.wait_operation(client.call("DELETE", "/v1/instances/" + uuid).body["operation_id"], 60s)["state"] ==
          "succeeded");
  REQUIRE(next.stop(SIGTERM) == 0);
}

TEST_CASE("the periodic cache manager removes a base once nothing uses it, and SIGHUP changes its policy") {
  Host host;
  std::string image_id = small_image(host, "kilnd-aging");
  // Aging so long that nothing goes, checked every second.
  std::string keep = "[image_cache]\nmanager_interval_seconds = 1\nremove_unused_original_minimum_age_seconds = 86400\n";
  auto config = host.config(kiln::test::peers().glance_url, keep);
  kiln::test::KilndProcess kilnd(config, host.socket);
  REQUIRE(kilnd.wait_ready());
  auto client = kilnd.client();
  std::string uuid = kiln::test::random_uuid();
  REQUIRE(client.wait_operation(client.call("POST", "/v1/instances", boot_body(uuid, image_id, false)).body["operation_id"],
                                120s)["state"] == "succeeded");
  REQUIRE(client.wait_operation(client.call("DELETE", "/v1/instances/" + uuid).body["operation_id"], 60s)["state"] ==
          "succeeded");
  auto base = host.instances / "_base" / kiln::cache::base_name_for(image_id);
  // Two rounds of the manager that ran with the base already unused.
  auto rounds = [&] {
    const std::string round = "cache manager: 0 base(s) removed";
    std::string log = kilnd.log();
    std::size_t count = 0;
    for (auto at = log.find(round); at != std::string::npos; at = log.find(round, at + 1)) ++count;
    return count;
  };
  std::size_t before = rounds();
  for (int i = 0; i < 100 && rounds() < before + 2; ++i) std::this_thread::sleep_for(100ms);
  REQUIRE(rounds() >= before + 2);
  REQUIRE(fs::exists(base));  // unused, but younger than a day

  // Reloaded with aging at 0 s: the next round removes it.
  host.config(kiln::test::peers().glance_url,
              "[image_cache]\nmanager_interval_seconds = 1\nremove_unused_original_minimum_age_seconds = 0\n");
  ::kill(kilnd.pid(), SIGHUP);
  // The manager logs a removal after the file is gone: wait for both, or a loaded host sees the one without the other.
  bool removed = false;
  for (int i = 0; i < 100 && !removed; ++i) {
    std::this_thread::sleep_for(100ms);
    removed = !fs::exists(base) && kilnd.log().find("cache manager: removed base") != std::string::npos;
  }
  INFO(kilnd.log());
  REQUIRE(removed);
  REQUIRE(kilnd.log().find("SIGHUP: settings reloaded; changed: image cache policy") != std::string::npos);
  REQUIRE(kilnd.log().find("cache manager: removed base") != std::string::npos);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("plain TCP on loopback serves when configured, and a non-loopback plain listener stops startup") {
  Host host;
  unsigned short port = free_tcp_port();
  kiln::test::KilndProcess kilnd(
      host.config(kiln::test::peers().glance_url, "listen = 127.0.0.1:" + std::to_string(port) + "\nplain_tcp = true\n"),
      host.socket);
  REQUIRE(kilnd.wait_ready());
  // /healthz names the instances path served: this kilnd's, not another
  // listener's. (/v1/instances is not compared with empty: it also lists
  // kiln domains other tests define on the shared libvirtd meanwhile.)
  auto plain = kiln::run(kiln::Command(
      {"curl", "-s", "--max-time", "10", "http://127.0.0.1:" + std::to_string(port) + "/healthz"}));
  INFO(plain.err << plain.out);
  REQUIRE(plain.exit_code == 0);
  REQUIRE(fs::equivalent(json::parse(plain.out).at("instances_path").get<std::string>(), host.instances));
  auto listed = kiln::run(kiln::Command(
      {"curl", "-s", "--max-time", "10", "http://127.0.0.1:" + std::to_string(port) + "/v1/instances"}));
  REQUIRE(listed.exit_code == 0);
  REQUIRE(json::parse(listed.out).at("instances").is_array());
  REQUIRE(kilnd.stop(SIGTERM) == 0);

  Host exposed;
  kiln::test::KilndProcess refused(
      exposed.config(kiln::test::peers().glance_url, "listen = 0.0.0.0:" + std::to_string(port) + "\nplain_tcp = true\n"),
      exposed.socket);
  REQUIRE(refused.wait_exit(30s) == 1);
  INFO(refused.log());
  REQUIRE(refused.log().find("kilnd: error [config_invalid]") != std::string::npos);
  REQUIRE(refused.log().find("loopback") != std::string::npos);
  REQUIRE(!fs::exists(exposed.socket));
}

TEST_CASE("a pre-cache the host's disk has no room for fails insufficient_space, which kilnd answers as 507, not 502") {
  Host host;
  std::string image_id = small_image(host, "kilnd-no-room");
  // 1 PiB to keep free: no image fits, and the check comes before any byte is fetched.
  kiln::test::KilndProcess kilnd(
      host.config(kiln::test::peers().glance_url, "[image_cache]\nreserved_space_mb = 1073741824\n"), host.socket);
  REQUIRE(kilnd.wait_ready());
  auto client = kilnd.client();
  auto accepted = client.call("POST", "/v1/images/" + image_id + "/cache");
  REQUIRE(accepted.status == 202);
  auto operation = client.wait_operation(accepted.body["operation_id"], 60s);
  INFO(operation.dump());
  REQUIRE(operation["state"] == "failed");
  REQUIRE(operation["error"]["code"] == "insufficient_space");
  REQUIRE(operation["error"]["http_status"] == 507);
  REQUIRE(client.call("GET", "/v1/cache").body["bases"].empty());
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}
