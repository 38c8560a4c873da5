// The RBD tests' view of the private Ceph (the `ceph` fixture, tools/peers/ceph)
// and the rbd command as client.admin: Glance's side of a test, and the judge
// of kiln's. Every helper fails the running test (REQUIRE) when the cluster
// or the command is not there.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/rbd/cluster.h"

namespace kiln::test {

struct CephEnv {
  std::string conf;  // the cluster's ceph.conf (client.admin's keyring beside it)
  std::string fsid;
};
// tools/peers/ceph's ceph.env under KILN_CEPH_DIR.
const CephEnv& ceph();

// rbd --conf <ceph.conf> <args...> as client.admin; its stdout. Fails the test when rbd fails.
std::string rbd_admin(const std::vector<std::string>& args);
nlohmann::json rbd_info(const std::string& spec);
bool rbd_exists(const std::string& pool, const std::string& image);

// A librados connection as client.kiln, kiln's own user (not a shared one).
rbd::Cluster connect_as_kiln();

}  // namespace kiln::test
