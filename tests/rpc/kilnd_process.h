// The kilnd binary as a test runs it: a config written to a scratch
// directory, the process started with chosen environment variables, its
// stderr kept in a file, stopped with a signal and its exit status checked.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>

#include "kiln/rpc/agent_client.h"

namespace kiln::test {

// A kiln.conf for kilnd: instances path, Glance, libvirt, socket; `extra` is
// appended verbatim (more sections).
std::filesystem::path write_kilnd_config(const std::filesystem::path& directory, const std::filesystem::path& instances,
                                         const std::string& glance_url, const std::string& libvirt_uri,
                                         const std::filesystem::path& socket, const std::string& extra = "");

// A 64 MiB raw image with 8 MiB of random data at its start, in `directory`:
// big enough that a download stalled by the fault proxy is caught in the middle.
std::filesystem::path make_interruptible_raw(const std::filesystem::path& directory);

class KilndProcess {
 public:
  KilndProcess(const std::filesystem::path& config, const std::filesystem::path& socket,
               std::map<std::string, std::string> environment = {});
  ~KilndProcess();  // SIGKILL when still running
  KilndProcess(const KilndProcess&) = delete;
  KilndProcess& operator=(const KilndProcess&) = delete;

  // Waits until GET /healthz answers 200; false when kilnd exited or `timeout` passed.
  bool wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends `signal` and waits for the exit; returns the exit status (128 + signal when killed).
  int stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(90));
  // Waits for the process to exit by itself; -1 on timeout.
  int wait_exit(std::chrono::milliseconds timeout);
  std::string log() const;  // stderr so far
  pid_t pid() const { return pid_; }
  rpc::AgentClient client() const { return rpc::AgentClient(socket_, std::chrono::seconds(60)); }

 private:
  pid_t pid_ = -1;
  std::filesystem::path socket_;
  std::filesystem::path log_;
  int exit_status_ = -1;
};

}  // namespace kiln::test
