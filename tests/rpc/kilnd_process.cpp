#include "kilnd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace kiln::test {

namespace fs = std::filesystem;

fs::path make_interruptible_raw(const fs::path& directory) {
  fs::path image = directory / "big.raw";
  run_checked(Command({"qemu-img", "create", "-q", "-f", "raw", image.string(), "64M"}));
  run_checked(Command({"dd", "if=/dev/urandom", "of=" + image.string(), "bs=1M", "count=8", "conv=notrunc"}));
  return image;
}

fs::path write_kilnd_config(const fs::path& directory, const fs::path& instances, const std::string& glance_url,
                            const std::string& libvirt_uri, const fs::path& socket, const std::string& extra) {
  fs::path config = directory / "kiln.conf";
  write_text(config, "[DEFAULT]\ninstances_path = " + instances.string() + "\n[glance]\napi_servers = " + glance_url +
                         "\n[libvirt]\nconnection_uri = " + libvirt_uri + "\nvirt_type = qemu\n[rpc]\nunix_socket = " +
                         socket.string() + "\n" + extra);
  return config;
}

KilndProcess::KilndProcess(const fs::path& config, const fs::path& socket,
                           std::map<std::string, std::string> environment)
    : socket_(socket), log_(config.parent_path() / ("kilnd-" + std::to_string(::time(nullptr)) + "-" +
                                                    std::to_string(reinterpret_cast<std::uintptr_t>(this) % 100000) +
                                                    ".log")) {
  std::vector<std::string> argv = {KILN_KILND, "--config", config.string()};
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string text = *entry;
    std::string name = text.substr(0, text.find('='));
    if (name == "NOTIFY_SOCKET" || name == "WATCHDOG_USEC" || name == "WATCHDOG_PID" || name == "JOURNAL_STREAM" ||
        environment.count(name)) {
      continue;
    }
    env.push_back(text);
  }
  for (const auto& [name, value] : environment) env.push_back(name + "=" + value);
  std::vector<char*> arg_pointers, env_pointers;
  for (auto& arg : argv) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  for (auto& item : env) env_pointers.push_back(item.data());
  env_pointers.push_back(nullptr);
  int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(log_fd >= 0);
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::dup2(log_fd, STDERR_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::execve(arg_pointers[0], arg_pointers.data(), env_pointers.data());
    ::_exit(127);
  }
  ::close(log_fd);
}

KilndProcess::~KilndProcess() {
  if (exit_status_ < 0 && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

int KilndProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_status_ >= 0) return exit_status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

bool KilndProcess::wait_ready(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (wait_exit(std::chrono::milliseconds(0)) >= 0) return false;
    try {
      if (rpc::AgentClient(socket_, std::chrono::seconds(2)).call("GET", "/healthz").status == 200) return true;
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int KilndProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (exit_status_ >= 0) return exit_status_;
  ::kill(pid_, signal);
  return wait_exit(timeout);
}

std::string KilndProcess::log() const {
  std::ifstream file(log_);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace kiln::test
