// The peers started by tools/peers/start, and what tests do with them:
// upload images to the real Glance, run kilnctl, ask libvirt.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/util/subprocess.h"

namespace kiln::test {

struct Peers {
  std::string glance_url;
  std::filesystem::path glance_datadir;  // Glance's file store: <datadir>/<image id>
  std::string libvirt_uri;
};

// Reads KILN_PEERS_ENV; fails the test loudly when the peers are not running.
const Peers& peers();

// Creates an image record (POST /v2/images) and returns its id; uploads
// `file` (PUT /file) unless it is empty, leaving the image queued.
std::string upload_image(const std::string& name, const std::string& disk_format,
                         const std::filesystem::path& file);

// Adds (or replaces) properties of an image with a JSON-patch PATCH.
CommandResult patch_image(const std::string& image_id, const nlohmann::json& properties);

// GET /v2/images/{id} through curl.
nlohmann::json image_record(const std::string& image_id);

// Runs kilnctl with the peers' endpoints, `instances_path` and --json.
struct KilnctlResult {
  int exit_code;
  nlohmann::json output;  // stdout parsed as JSON
  std::string err;
};
KilnctlResult kilnctl(const std::filesystem::path& instances_path, std::vector<std::string> args);

// virsh -c <peers' libvirt> ...
CommandResult virsh(std::vector<std::string> args);

// A qcow2 image of `size` with recognisable data written by qemu-io.
void make_qcow2(const std::filesystem::path& path, const std::string& size);

}  // namespace kiln::test

namespace kiln::test {

// A helper server (python3 -c ..., fault_proxy.py, libvirt_proxy.py) that
// prints the port it listens on (or "ready") as its first line of stdout once
// it serves; SIGTERM'd and reaped on destruction.
class PortProcess {
 public:
  explicit PortProcess(std::vector<std::string> argv);
  ~PortProcess();
  PortProcess(const PortProcess&) = delete;
  PortProcess& operator=(const PortProcess&) = delete;

  int port() const { return port_; }
  const std::string& first_line() const { return first_line_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int pid_ = -1;
  int port_ = 0;
  std::string first_line_;
};

// tests/support/libvirt_proxy.py between kiln and the peers' libvirtd: it
// loses libvirt around the domain definition ("after-define": the reply
// arrives, then the connection is cut; "before-reply": the domain is defined
// but its reply never arrives) and refuses every connection after that.
class LibvirtProxy {
 public:
  LibvirtProxy(const std::filesystem::path& directory, const std::string& mode);
  // A qemu:///system URI whose socket is the proxy's.
  std::string uri() const { return "qemu:///system?socket=" + socket_.string(); }

 private:
  std::filesystem::path socket_;
  std::unique_ptr<PortProcess> process_;
};

// The peers' Glance port, for proxies placed in front of it.
std::string glance_port();

// tests/support/fault_proxy.py in front of the peers' Glance: counts the
// requests it forwards and can cut or stall the first download responses.
class FaultProxy {
 public:
  // `fault_args`: e.g. {"--cut", "1048576"}; empty for a plain counting proxy.
  explicit FaultProxy(std::vector<std::string> fault_args = {});
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  std::string url() const { return process_->url(); }
  // Request lines forwarded so far, with their Range header if any.
  std::vector<std::string> requests() const;
  // How many of them were GET .../file (downloads).
  int downloads() const;

 private:
  std::filesystem::path log_;
  std::unique_ptr<PortProcess> process_;
};

}  // namespace kiln::test
