#include "peers.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <map>

#include "kiln/util/fs.h"

namespace kiln::test {

const Peers& peers() {
  static const Peers loaded = [] {
    std::ifstream file(KILN_PEERS_ENV);
    if (!file) {
      FAIL("peers are not running: " KILN_PEERS_ENV " is missing (the 'peers: start' test must run first)");
    }
    std::map<std::string, std::string> values;
    std::string line;
    while (std::getline(file, line)) {
      auto equals = line.find('=');
      if (equals != std::string::npos) values[line.substr(0, equals)] = line.substr(equals + 1);
    }
    return Peers{values["GLANCE_URL"], values["GLANCE_DATADIR"], values["LIBVIRT_URI"]};
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

KilnctlResult kilnctl(const std::filesystem::path& instances_path, std::vector<std::string> args) {
  std::vector<std::string> argv = {KILN_KILNCTL, "--json", "--glance", peers().glance_url,
                                   "--libvirt-uri", peers().libvirt_uri, "--instances-path",
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
