// A scratch host for the kilnd tests: its own instances path, socket and
// config pointing at the peers' Glance and libvirtd, and a small image to boot.
#pragma once

#include <filesystem>
#include <string>

#include "kilnd_process.h"
#include "peers.h"
#include "scratch.h"

namespace kiln::test {

struct KilndHost {
  ScratchDir scratch;
  std::filesystem::path instances = scratch / "instances";
  std::filesystem::path socket = scratch / "kiln.sock";
  std::filesystem::path journal = instances / "operations.log";

  std::filesystem::path config(const std::string& glance_url = peers().glance_url, const std::string& extra = "",
                               const std::string& libvirt_uri = peers().libvirt_uri) {
    return write_kilnd_config(scratch.path(), instances, glance_url, libvirt_uri, socket, extra);
  }
};

// A 16 MiB qcow2 uploaded to the peers' Glance as `name`; returns its id.
inline std::string small_image(const KilndHost& host, const std::string& name) {
  make_qcow2(host.scratch / (name + ".qcow2"), "16M");
  return upload_image(name, "qcow2", host.scratch / (name + ".qcow2"));
}

}  // namespace kiln::test
