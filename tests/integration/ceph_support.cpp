#include "ceph_support.h"

#include <catch2/catch.hpp>

#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace kiln::test {

const CephEnv& ceph() {
  static const CephEnv env = [] {
    auto values = read_env_file(std::string(KILN_CEPH_DIR) + "/ceph.env");
    if (!values) FAIL("no " KILN_CEPH_DIR "/ceph.env: run through ctest, which starts the ceph fixture");
    return CephEnv{values->at("CEPH_CONF"), values->at("FSID")};
  }();
  return env;
}

std::string rbd_admin(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"rbd", "--conf", ceph().conf};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult result = run(Command(argv, {}, std::chrono::seconds(60)));
  INFO(describe(argv) << ": " << result.err);
  REQUIRE(result.exit_code == 0);
  return result.out;
}

nlohmann::json rbd_info(const std::string& spec) {
  return nlohmann::json::parse(rbd_admin({"info", "--format", "json", spec}));
}

bool rbd_exists(const std::string& pool, const std::string& image) {
  for (const auto& name : nlohmann::json::parse(rbd_admin({"ls", "--format", "json", pool}))) {
    if (name == image) return true;
  }
  return false;
}

rbd::Cluster connect_as_kiln() {
  rbd::ConnectOptions options;
  options.ceph_conf = ceph().conf;
  options.user = "kiln";
  return rbd::Cluster::connect(options);
}

}  // namespace kiln::test
