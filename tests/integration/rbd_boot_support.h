// What the images_type = rbd tests on the peers-rbd fixture share (test_rbd_boot.cpp, test_rbd_crash.cpp):
// the fixture's environment, kiln's configuration as an operator writes it, the libvirt ceph secret, and
// Glance images in its ceph store or its file store. Every helper fails the running test (REQUIRE) when a
// command or a peer fails.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "scratch.h"

namespace kiln::test {

// The peers-rbd fixture's env file (GLANCE_URL, LIBVIRT_URI, ROOT, ...).
const std::map<std::string, std::string>& peers_env();
// Runs argv (60 s at most) and returns its stdout; fails the test unless it exits 0.
std::string run_ok(std::vector<std::string> argv);
// The libvirt ceph secret nova expects the operator to define (client.kiln's key), defined once per process.
const std::string& ceph_secret();
// kiln.conf with images_type = rbd in pool vms as client.kiln, with `secret` as rbd_secret_uuid.
std::filesystem::path write_rbd_config(const ScratchDir& scratch, const std::string& secret);
// A raw image of `size` (qemu-img's size syntax) in Glance's ceph store, 1 MiB of data at 0; its id.
std::string upload_to_ceph(const ScratchDir& scratch, const std::string& size);
// `file` as an image in Glance's file store (no rbd:// location); its id.
std::string upload_to_file_store(const std::filesystem::path& file, const std::string& disk_format);
std::string read_text(const std::filesystem::path& path);
std::string glance_log();

}  // namespace kiln::test
