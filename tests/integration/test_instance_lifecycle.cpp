// The operator's side of the lifecycle on the real libvirtd, through kilnctl:
// instance show/list against qemu-img's own account, du's arithmetic, recover
// after the domain is lost, and reconcile after a boot killed mid-download.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "kiln/cache/image_cache.h"
#include "kiln/util/fs.h"
#include "peers.h"
#include "scratch.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;
using kiln::test::kilnctl;
using kiln::test::virsh;

namespace {

struct Host {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  std::vector<std::string> booted;

  ~Host() {
    for (const auto& uuid : booted) kilnctl(instances, {"delete", uuid});
  }

  std::string boot(const std::string& image_id, std::vector<std::string> extra = {}) {
    std::string uuid = kiln::test::random_uuid();
    std::vector<std::string> args = {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                     "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "16"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto result = kilnctl(instances, args);
    INFO(result.err);
    REQUIRE(result.exit_code == 0);
    booted.push_back(uuid);
    return uuid;
  }
};

std::string domain_state(const std::string& uuid) {
  auto result = virsh({"domstate", uuid});
  return result.exit_code == 0 ? result.out.substr(0, result.out.find('\n')) : "absent";
}

// Polls `condition` every 20 ms for up to `limit`; its last answer.
template <typename Condition>
bool eventually(Condition condition, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

json findings_for(const json& report, const std::string& uuid) {
  json found = json::array();
  for (const auto& finding : report["findings"]) {
    if (finding["uuid"] == uuid) found.push_back(finding);
  }
  return found;
}

// kilnctl started in the background (posix_spawn), killed by the test.
class BackgroundKilnctl {
 public:
  explicit BackgroundKilnctl(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    REQUIRE(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
  }
  ~BackgroundKilnctl() { kill_hard(); }
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("instance show tells what qemu-img info --backing-chain and virsh tell") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("show-me", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = host.boot(image_id);

  auto shown = kilnctl(host.instances, {"instance", "show", uuid});
  REQUIRE(shown.exit_code == 0);
  REQUIRE(shown.output["domain"]["state"] == "running");
  REQUIRE(shown.output["domain"]["state"] == domain_state(uuid));
  REQUIRE(shown.output["provisioning"] == false);
  fs::path disk = host.instances / uuid / "disk";
  auto qemu = json::parse(kiln::run_checked(
      {{"qemu-img", "info", "-U", "--backing-chain", "--output=json", "-f", "qcow2", disk.string()}}));
  const auto& disks = shown.output["disks"];
  REQUIRE(disks.size() == 2);  // disk and disk.swap
  REQUIRE(disks[0]["name"] == "disk");
  const auto& chain = disks[0]["backing_chain"];
  REQUIRE(chain.size() == qemu.size());
  for (std::size_t i = 0; i < qemu.size(); ++i) {
    INFO("layer " << i);
    REQUIRE(chain[i]["path"] == qemu[i]["filename"]);
    REQUIRE(chain[i]["format"] == qemu[i]["format"]);
    REQUIRE(chain[i]["virtual_size"] == qemu[i]["virtual-size"]);
    REQUIRE(chain[i]["physical_bytes"] == qemu[i]["actual-size"]);
  }
  REQUIRE(disks[0]["problem"].is_null());
  REQUIRE(disks[1]["backing_chain"][1]["path"] == (host.instances / "_base" / "swap_16").string());

  auto listed = kilnctl(host.instances, {"instance", "list"});
  REQUIRE(listed.exit_code == 0);
  REQUIRE(listed.output["instances"].size() == 1);
  REQUIRE(listed.output["instances"][0]["uuid"] == uuid);

  auto unknown = kilnctl(host.instances, {"instance", "show", kiln::test::random_uuid()});
  REQUIRE(unknown.exit_code == 1);
  REQUIRE(unknown.output["error"]["code"] == "not_found");
}

TEST_CASE("du shows a base shared by two instances and what deleting each would free") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("du-shared", "qcow2", host.scratch / "image.qcow2");
  std::string first = host.boot(image_id, {"--no-start"});
  std::string second = host.boot(image_id, {"--no-start"});
  std::string base_name = kiln::cache::base_name_for(image_id);

  auto du = kilnctl(host.instances, {"du"});
  REQUIRE(du.exit_code == 0);
  std::uint64_t base_bytes = 0;
  for (const auto& base : du.output["bases"]) {
    if (base["name"] != base_name && base["name"] != "swap_16") continue;
    REQUIRE(base["users"] == 2);
    REQUIRE(base["shared_bytes"] == base["bytes"]);
    REQUIRE(base["freed_by_deleting"] == 0);
    if (base["name"] == base_name) base_bytes = base["bytes"];
  }
  REQUIRE(base_bytes >= 1024 * 1024);  // the image's 1 MiB of data, at least
  for (const auto& instance : du.output["instances"]) {
    REQUIRE(instance["freed_by_deleting"] == instance["own_bytes"]);
  }

  REQUIRE(kilnctl(host.instances, {"delete", second}).exit_code == 0);
  auto after = kilnctl(host.instances, {"du"});
  for (const auto& instance : after.output["instances"]) {
    REQUIRE(instance["uuid"] == first);
    REQUIRE(instance["freed_by_deleting"].get<std::uint64_t>() >=
            instance["own_bytes"].get<std::uint64_t>() + base_bytes);
  }
}

TEST_CASE("a domain lost from libvirt is reported by reconcile and re-defined by recover") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "64M");
  std::string image_id = kiln::test::upload_image("recover-me", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = host.boot(image_id);
  std::string before = kiln::read_file(host.instances / uuid / "libvirt.xml");
  REQUIRE(virsh({"destroy", uuid}).exit_code == 0);
  REQUIRE(virsh({"undefine", uuid}).exit_code == 0);

  auto reconciled = kilnctl(host.instances, {"instance", "reconcile"});
  REQUIRE(reconciled.exit_code == 0);
  auto found = findings_for(reconciled.output, uuid);
  REQUIRE(found.size() == 1);
  REQUIRE(found[0]["kind"] == "directory_without_domain");
  REQUIRE(fs::exists(host.instances / uuid / "disk"));

  auto recovered = kilnctl(host.instances, {"instance", "recover", uuid});
  INFO(recovered.err);
  REQUIRE(recovered.exit_code == 0);
  REQUIRE(recovered.output["already_defined"] == false);
  REQUIRE(domain_state(uuid) == "running");
  REQUIRE(kiln::read_file(host.instances / uuid / "libvirt.xml") == before);
  REQUIRE(findings_for(kilnctl(host.instances, {"instance", "reconcile"}).output, uuid).empty());

  // With its base gone, an instance cannot be recovered, and nothing is defined.
  REQUIRE(virsh({"destroy", uuid}).exit_code == 0);
  REQUIRE(virsh({"undefine", uuid}).exit_code == 0);
  fs::rename(host.instances / "_base" / kiln::cache::base_name_for(image_id), host.scratch / "moved");
  auto refused = kilnctl(host.instances, {"instance", "recover", uuid});
  REQUIRE(refused.exit_code == 1);
  REQUIRE(refused.output["error"]["code"] == "instance_broken");
  REQUIRE(domain_state(uuid) == "absent");
}

// The entries at the top of instances_path whose names start with `prefix`.
std::vector<fs::path> entries_starting(const fs::path& directory, const std::string& prefix) {
  std::vector<fs::path> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(directory, error)) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) found.push_back(entry.path());
  }
  return found;
}

TEST_CASE("a boot killed mid-download leaves nothing under its uuid, and reconcile removes its partial download") {
  Host host;
  fs::path image = host.scratch / "image.raw";
  {
    kiln::UniqueFd fd = kiln::open_file(image, O_WRONLY | O_CREAT | O_TRUNC);
    std::string data(4 << 20, '\x42');
    kiln::write_all(fd.get(), data, image);
  }
  std::string image_id = kiln::test::upload_image("killed", "raw", image);
  kiln::test::FaultProxy proxy({"--stall", std::to_string(1 << 20), "--times", "100"});
  std::string uuid = kiln::test::random_uuid();
  fs::path directory = host.instances / uuid;
  fs::path part = host.instances / "_base" / (kiln::cache::base_name_for(image_id) + ".part");
  {
    BackgroundKilnctl boot({KILN_KILNCTL, "--glance", proxy.url(), "--libvirt-uri", kiln::test::peers().libvirt_uri,
                            "--instances-path", host.instances.string(), "boot", "--image", image_id, "--uuid", uuid,
                            "--vcpus", "1", "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"});
    // Killed while the download stalls, its .part open (bytes below one
    // pipeline chunk may not have reached it yet).
    REQUIRE(eventually([&] { return proxy.downloads() > 0; }, std::chrono::seconds(30)));
    REQUIRE(eventually([&] { return fs::exists(part); }, std::chrono::seconds(30)));
    // The base is fetched before the instance is built (kiln/rpc/steps.h,
    // as kilnd does): nothing under the uuid, not even a temporary, yet.
    REQUIRE(entries_starting(host.instances, "." + uuid + ".building-").empty());
    boot.kill_hard();
  }
  REQUIRE_FALSE(fs::exists(directory));
  REQUIRE(entries_starting(host.instances, "." + uuid).empty());
  REQUIRE(fs::exists(part));

  auto dry = kilnctl(host.instances, {"instance", "reconcile", "--dry-run"});
  REQUIRE(dry.exit_code == 0);
  REQUIRE(fs::exists(part));
  auto reconciled = kilnctl(host.instances, {"instance", "reconcile"});
  REQUIRE(reconciled.exit_code == 0);
  REQUIRE(findings_for(reconciled.output, uuid).empty());  // no instance: only the download to sweep
  bool part_removed = false;
  for (const auto& repair : reconciled.output["cache_repairs"]) {
    if (repair["path"] == part.string()) part_removed = true;
  }
  REQUIRE(part_removed);
  REQUIRE_FALSE(fs::exists(host.instances / "locks" / ("instance-" + uuid)));
  REQUIRE_FALSE(fs::exists(part));
  REQUIRE(domain_state(uuid) == "absent");

  // The uuid is free again: the same boot now succeeds through the real Glance.
  auto booted = kilnctl(host.instances, {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                         "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0", "--no-start"});
  REQUIRE(booted.exit_code == 0);
  host.booted.push_back(uuid);
}

TEST_CASE("an image naming a kernel_id boots that kernel directly, with os_command_line, on the real libvirtd") {
  // memtest86+ (a Debian package, tools/install-deps) is a kernel QEMU boots
  // with the Linux boot protocol; with console=ttyS0 it writes its banner to
  // the serial console, which libvirt logs to the instance's console.log.
  const fs::path kernel = "/boot/memtest86+x64.bin";
  INFO("needs " << kernel << " from the memtest86+ package (tools/install-deps)");
  REQUIRE(fs::exists(kernel));
  Host host;
  std::string kernel_id = kiln::test::upload_image("memtest-kernel", "aki", kernel);
  kiln::test::make_qcow2(host.scratch / "root.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("kernel-booted", "qcow2", host.scratch / "root.qcow2");
  auto patched = kiln::test::patch_image(image_id, {{"kernel_id", kernel_id}, {"os_command_line", "console=ttyS0,115200"}});
  INFO(patched.out << patched.err);
  REQUIRE(patched.exit_code == 0);

  std::string uuid = host.boot(image_id);
  fs::path kernel_base = host.instances / "_base" / kiln::cache::base_name_for(kernel_id);
  REQUIRE(kiln::read_file(kernel_base) == kiln::read_file(kernel));  // fetched as is, not converted
  auto xml = virsh({"dumpxml", uuid});
  REQUIRE(xml.out.find("<kernel>" + kernel_base.string() + "</kernel>") != std::string::npos);
  REQUIRE(xml.out.find("<cmdline>console=ttyS0,115200</cmdline>") != std::string::npos);

  fs::path console = host.instances / uuid / "console.log";
  std::string log;
  bool banner = eventually([&] {
    log = kiln::read_file(console);
    return log.find("Memtest86+") != std::string::npos;
  }, std::chrono::seconds(300));  // TCG on a loaded 2-core machine; seconds when idle
  INFO("console.log: " << log);
  REQUIRE(banner);
  REQUIRE(domain_state(uuid) == "running");
}

TEST_CASE("a domain that cannot start fails the boot with domain_start_failed and leaves nothing behind") {
  // A Linux kernel header ("HdrS") of boot protocol 1.0 with a ramdisk: libvirt
  // defines the domain, and QEMU exits at start ("linux kernel too old to
  // load a ram disk"). The boot must fail, undefine the domain and remove the
  // instance directory; the cached bases stay for the next boot.
  Host host;
  std::string kernel(65536, '\0');
  kernel[0x1f1] = 4;               // setup sectors
  kernel.replace(0x202, 4, "HdrS");
  kernel[0x206] = 0x00;            // protocol 0x0100, little-endian
  kernel[0x207] = 0x01;
  kiln::test::write_text(host.scratch / "old-kernel", kernel);
  kiln::test::write_text(host.scratch / "ramdisk", std::string(4096, 'r'));
  std::string kernel_id = kiln::test::upload_image("old-kernel", "aki", host.scratch / "old-kernel");
  std::string ramdisk_id = kiln::test::upload_image("ramdisk", "ari", host.scratch / "ramdisk");
  kiln::test::make_qcow2(host.scratch / "root.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("old-kernel-booted", "qcow2", host.scratch / "root.qcow2");
  REQUIRE(kiln::test::patch_image(image_id, {{"kernel_id", kernel_id}, {"ramdisk_id", ramdisk_id}}).exit_code == 0);

  std::string uuid = kiln::test::random_uuid();
  auto result = kilnctl(host.instances, {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                         "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "16"});
  INFO(result.output.dump() << result.err);
  REQUIRE(result.exit_code != 0);
  REQUIRE(result.output["error"]["code"] == "domain_start_failed");
  std::string message = result.output["error"]["message"];
  REQUIRE(message.find("did not start") != std::string::npos);
  REQUIRE(message.find("too old to load a ram disk") != std::string::npos);  // QEMU's own words, via libvirt
  REQUIRE(domain_state(uuid) == "absent");
  REQUIRE_FALSE(fs::exists(host.instances / uuid));
  REQUIRE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(image_id)));
  REQUIRE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(kernel_id)));

  // Nothing is left for reconcile to find.
  auto report = kilnctl(host.instances, {"instance", "reconcile", "--dry-run"});
  REQUIRE(findings_for(report.output, uuid).empty());
}

namespace {

// Boots through a LibvirtProxy that loses libvirt around the definition, and
// checks what a truthful rollback leaves: the error says what libvirt did,
// the domain (which libvirtd did define) still has its disks, the directory
// waits for reconcile; reconcile undefines and removes; the retry boots.
void lose_libvirt_at_define(const std::string& mode, const std::string& what_libvirt_did) {
  Host host;
  fs::path image = host.scratch / "image.raw";
  {
    kiln::UniqueFd fd = kiln::open_file(image, O_WRONLY | O_CREAT | O_TRUNC);
    std::string data(1 << 20, '\x5a');
    kiln::write_all(fd.get(), data, image);
  }
  std::string image_id = kiln::test::upload_image("libvirt-lost-" + mode, "raw", image);
  std::string uuid = kiln::test::random_uuid();
  std::vector<std::string> boot = {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                   "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0"};
  fs::path directory = host.instances / uuid;
  {
    kiln::test::LibvirtProxy proxy(host.scratch.path(), mode);
    std::vector<std::string> argv = {KILN_KILNCTL, "--json", "--glance", kiln::test::peers().glance_url,
                                     "--libvirt-uri", proxy.uri(), "--virt-type", "qemu", "--instances-path",
                                     host.instances.string()};
    argv.insert(argv.end(), boot.begin(), boot.end());
    auto result = kiln::run({argv});
    INFO(result.out << result.err);
    REQUIRE(result.exit_code == 1);
    auto output = json::parse(result.out);
    REQUIRE(output["error"]["code"] == "rollback_incomplete");
    std::string message = output["error"]["message"];
    REQUIRE(message.find(what_libvirt_did) != std::string::npos);
    REQUIRE(message.find("refused the domain definition") == std::string::npos);
    REQUIRE(message.find("undefining the domain failed") != std::string::npos);
    REQUIRE(message.find(directory.string()) != std::string::npos);
  }
  // libvirtd did define it, and its disks are still there: no domain points at nothing.
  auto info = virsh({"dominfo", uuid});
  INFO(info.out << info.err);
  REQUIRE(info.exit_code == 0);
  REQUIRE(info.out.find("Persistent:     yes") != std::string::npos);
  REQUIRE(fs::is_regular_file(directory / "disk"));
  REQUIRE(fs::is_regular_file(directory / "libvirt.xml"));
  REQUIRE(kiln::read_file(directory / ".kiln-provisioning").find("rollback_pending") != std::string::npos);

  // The same boot is refused until reconcile has finished the rollback.
  REQUIRE(kilnctl(host.instances, boot).output["error"]["code"] == "instance_exists");
  auto reconciled = kilnctl(host.instances, {"instance", "reconcile"});
  REQUIRE(reconciled.exit_code == 0);
  auto found = findings_for(reconciled.output, uuid);
  REQUIRE(found.size() == 1);
  REQUIRE(found[0]["kind"] == "rollback_pending");
  REQUIRE(found[0]["changed"] == true);
  REQUIRE(domain_state(uuid) == "absent");
  REQUIRE_FALSE(fs::exists(directory));

  boot.push_back("--no-start");
  auto retried = kilnctl(host.instances, boot);
  INFO(retried.err);
  REQUIRE(retried.exit_code == 0);
  host.booted.push_back(uuid);
  REQUIRE(domain_state(uuid) == "shut off");
}

}  // namespace

TEST_CASE("libvirt lost right after the define: the directory is kept for reconcile and the error says libvirt accepted it") {
  lose_libvirt_at_define("after-define", "libvirt accepted the definition of domain");
}

TEST_CASE("libvirt lost before the define's reply: the error says the definition may have been accepted, never refused") {
  lose_libvirt_at_define("before-reply", "may have accepted the definition");
}

namespace {

// kilnctl as an operator types it: text output unless `args` says --json.
kiln::CommandResult kilnctl_as_typed(const fs::path& instances, const std::string& libvirt_uri,
                                     std::vector<std::string> args) {
  std::vector<std::string> argv = {KILN_KILNCTL, "--glance", kiln::test::peers().glance_url, "--libvirt-uri",
                                   libvirt_uri, "--virt-type", "qemu", "--instances-path", instances.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return kiln::run({argv});
}

}  // namespace

TEST_CASE("a Glance image name with a newline and escape sequences prints escaped, and a non-UTF-8 name is refused") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("evil\nrow\x1b[2J", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = host.boot(image_id, {"--name", "web \xc3\xa9t\xc3\xa9", "--no-start"});
  const std::string uri = kiln::test::peers().libvirt_uri;

  auto listed = kilnctl_as_typed(host.instances, uri, {"cache", "ls"});
  INFO(listed.out << listed.err);
  REQUIRE(listed.exit_code == 0);
  REQUIRE(listed.out.find("evil\\nrow\\e[2J") != std::string::npos);
  REQUIRE(listed.out.find('\x1b') == std::string::npos);
  REQUIRE(listed.out.find("\nrow") == std::string::npos);  // no forged row

  auto instances = kilnctl_as_typed(host.instances, uri, {"instance", "list"});
  REQUIRE(instances.exit_code == 0);
  REQUIRE(instances.out.find(uuid + "  instance-" + uuid + " (shut off)  \"web \xc3\xa9t\xc3\xa9\"") != std::string::npos);
  auto shown = kilnctl(host.instances, {"instance", "show", uuid});
  REQUIRE(shown.output["domain"]["name"] == "instance-" + uuid);
  REQUIRE(shown.output["domain"]["title"] == "web \xc3\xa9t\xc3\xa9");

  // Not UTF-8: refused as a usage error before anything is fetched or made.
  std::string other = kiln::test::random_uuid();
  auto refused = kilnctl_as_typed(host.instances, uri,
                                  {"boot", "--image", image_id, "--uuid", other, "--name", "web\xff", "--vcpus", "1",
                                   "--memory-mb", "128", "--root-gb", "1", "--swap-mb", "0", "--no-start"});
  INFO(refused.err);
  REQUIRE(refused.exit_code == 2);
  REQUIRE(refused.err.find("not valid UTF-8: web\\xff") != std::string::npos);
  REQUIRE_FALSE(fs::exists(host.instances / other));
  REQUIRE(virsh({"domstate", other}).exit_code != 0);
}

TEST_CASE("a missing or foreign instances path is not_an_instances_path for every command but boot") {
  kiln::test::ScratchDir scratch;
  fs::path missing = scratch / "instnaces";
  fs::path foreign = scratch / "home";
  fs::create_directories(foreign);
  kiln::test::write_text(foreign / "notes.txt", "not kiln's");
  const std::vector<std::vector<std::string>> commands = {
      {"instance", "list"}, {"cache", "ls"}, {"instance", "reconcile", "--dry-run"}, {"du"},
      {"instance", "show", kiln::test::random_uuid()}};
  for (const auto& path : {missing, foreign}) {
    for (const auto& command : commands) {
      auto result = kilnctl(path, command);
      INFO(path << " " << command.front() << " " << result.err);
      REQUIRE(result.exit_code == 1);
      REQUIRE(result.output["error"]["code"] == "not_an_instances_path");
    }
  }
  REQUIRE_FALSE(fs::exists(missing));  // and nothing was made there
  // A fresh, empty directory (as the package makes it) is a host with nothing on it yet.
  fs::create_directories(scratch / "fresh");
  auto fresh = kilnctl(scratch / "fresh", {"instance", "list"});
  REQUIRE(fresh.exit_code == 0);
  REQUIRE(fresh.output == json{{"instances", json::array()}});
}

TEST_CASE("instance show and list still show the disks when libvirt is unreachable, and say so") {
  Host host;
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("degrade", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = host.boot(image_id, {"--no-start"});
  const std::string down = "qemu+unix:///system?socket=" + (host.scratch / "no-libvirtd.sock").string();

  auto shown = kilnctl_as_typed(host.instances, down, {"--json", "instance", "show", uuid});
  INFO(shown.out << shown.err);
  REQUIRE(shown.exit_code == 0);
  json report = json::parse(shown.out);
  REQUIRE(report["libvirt_unreachable"].is_string());
  REQUIRE(report["domain"].is_null());
  REQUIRE(report["disks"].size() == 2);  // disk and disk.swap, from the directory
  auto text = kilnctl_as_typed(host.instances, down, {"instance", "show", uuid});
  REQUIRE(text.exit_code == 0);
  REQUIRE(text.out.find("libvirt unreachable: ") == 0);
  REQUIRE(text.out.find("domain unknown (libvirt unreachable)") != std::string::npos);
  auto listed = kilnctl_as_typed(host.instances, down, {"--json", "instance", "list"});
  REQUIRE(listed.exit_code == 0);
  json reports = json::parse(listed.out)["instances"];
  REQUIRE(reports.size() == 1);
  REQUIRE(reports[0]["uuid"] == uuid);
  REQUIRE(reports[0]["libvirt_unreachable"].is_string());
}
