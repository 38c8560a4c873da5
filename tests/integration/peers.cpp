#include "peers.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <map>

#include "kiln/util/fs.h"
#include "scratch.h"

namespace kiln::test {

const Peers& peers() {
  static const Peers loaded = [] {
    auto values = read_env_file(KILN_PEERS_ENV);
    if (!values) FAIL("peers are not running: " KILN_PEERS_ENV " is missing (the 'peers: start' test must run first)");
    return Peers{(*values)["GLANCE_URL"], (*values)["GLANCE_DATADIR"], (*values)["LIBVIRT_URI"]};
  }();
  return loaded;
}

namespace {

std::string curl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"curl", "-sS", "--fail-with-body"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = run({argv});
  INFO(describe(argv) << "\n" << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  return result.out;
}

}  // namespace

std::string upload_image(const std::string& name, const std::string& disk_format,
                         const std::filesystem::path& file) {
  nlohmann::json request = {{"name", name}, {"disk_format", disk_format}, {"container_format", "bare"}};
  auto created = nlohmann::json::parse(curl({"-X", "POST", peers().glance_url + "/v2/images", "-H",
                                             "Content-Type: application/json", "-d", request.dump()}));
  std::string id = created["id"];
  if (!file.empty()) {
    curl({"-X", "PUT", peers().glance_url + "/v2/images/" + id + "/file", "-H",
          "Content-Type: application/octet-stream", "--data-binary", "@" + file.string()});
  }
  return id;
}

nlohmann::json image_record(const std::string& image_id) {
  return nlohmann::json::parse(curl({peers().glance_url + "/v2/images/" + image_id}));
}

CommandResult patch_image(const std::string& image_id, const nlohmann::json& properties) {
  nlohmann::json patch = nlohmann::json::array();
  for (const auto& [name, value] : properties.items()) {
    patch.push_back({{"op", "add"}, {"path", "/" + name}, {"value", value}});
  }
  return run({{"curl", "-sS", "--fail-with-body", "-X", "PATCH", peers().glance_url + "/v2/images/" + image_id, "-H",
               "Content-Type: application/openstack-images-v2.1-json-patch", "--data-binary", patch.dump()}});
}

KilnctlResult kilnctl(const std::filesystem::path& instances_path, std::vector<std::string> args) {
  std::vector<std::string> argv = {KILN_KILNCTL, "--json", "--glance", peers().glance_url,
                                   "--libvirt-uri", peers().libvirt_uri, "--virt-type", "qemu", "--instances-path",
                                   instances_path.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = run({argv});
  INFO(describe(argv) << "\nstdout: " << result.out << "\nstderr: " << result.err);
  auto output = nlohmann::json::parse(result.out, nullptr, false);
  REQUIRE_FALSE(output.is_discarded());
  return {result.exit_code, output, result.err};
}

CommandResult virsh(std::vector<std::string> args) {
  std::vector<std::string> argv = {"virsh", "-c", peers().libvirt_uri};
  argv.insert(argv.end(), args.begin(), args.end());
  return run({argv});
}

void make_qcow2(const std::filesystem::path& path, const std::string& size) {
  run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", path.string(), size}});
  run_checked({{"qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 8M 64k",
                path.string()}});
}

}  // namespace kiln::test

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kiln::test {

PortProcess::PortProcess(std::vector<std::string> argv) {
  std::vector<char*> pointers;
  for (auto& arg : argv) pointers.push_back(arg.data());
  pointers.push_back(nullptr);

  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::execvp(pointers[0], pointers.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  INFO(describe(argv) << " said: " << line);
  REQUIRE_FALSE(line.empty());
  first_line_ = line;
  if (line.find_first_not_of("0123456789") == std::string::npos) port_ = std::stoi(line);
}

PortProcess::~PortProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string glance_port() {
  const std::string& glance = peers().glance_url;
  return glance.substr(glance.rfind(':') + 1);
}

FaultProxy::FaultProxy(std::vector<std::string> fault_args) {
  char pattern[] = "/tmp/kiln-proxy.XXXXXX";
  int log_fd = ::mkstemp(pattern);
  REQUIRE(log_fd >= 0);
  ::close(log_fd);
  log_ = pattern;
  std::vector<std::string> argv = {"python3", KILN_SOURCE_DIR "/tests/support/fault_proxy.py", glance_port(),
                                   log_.string()};
  argv.insert(argv.end(), fault_args.begin(), fault_args.end());
  process_ = std::make_unique<PortProcess>(argv);
}

FaultProxy::~FaultProxy() {
  process_.reset();
  std::error_code ignored;
  std::filesystem::remove(log_, ignored);
}

std::vector<std::string> FaultProxy::requests() const {
  std::vector<std::string> lines;
  std::ifstream file(log_);
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

LibvirtProxy::LibvirtProxy(const std::filesystem::path& directory, const std::string& mode)
    : socket_(directory / "libvirt-proxy.sock") {
  const std::string& uri = peers().libvirt_uri;
  std::string upstream = uri.substr(uri.find("socket=") + 7);
  process_ = std::make_unique<PortProcess>(std::vector<std::string>{
      "python3", KILN_SOURCE_DIR "/tests/support/libvirt_proxy.py", upstream, socket_.string(), mode});
  REQUIRE(process_->first_line() == "ready");
}

int FaultProxy::downloads() const {
  int count = 0;
  for (const auto& line : requests()) {
    if (line.rfind("GET /v2/images/", 0) == 0 && line.find("/file ") != std::string::npos) ++count;
  }
  return count;
}

}  // namespace kiln::test
