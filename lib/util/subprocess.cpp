#include "kiln/util/subprocess.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

extern char** environ;

namespace kiln {

namespace {

struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_io_error("cannot create pipe", errno);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The child's environment: ours, with the locale forced to C.
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    if (text.starts_with("LC_ALL=") || text.starts_with("LANG=")) continue;
    env.emplace_back(text);
  }
  env.emplace_back("LC_ALL=C");
  env.emplace_back("LANG=C");
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

void set_limit(int resource, const std::optional<std::uint64_t>& value) {
  if (!value) return;
  rlimit limit{*value, *value};
  ::setrlimit(resource, &limit);
}

// No descriptor of kiln's but stdio survives in the child: closed, not only
// marked close-on-exec, because a sandbox's helper processes never exec and
// live as long as qemu-img does; a copy of another thread's lock fd would
// keep that flock held, and a copy of another run's pipe would keep it from
// seeing EOF. (The sandbox opens the files it binds itself, afterwards.)
void close_inherited_descriptors() {
  if (::close_range(3, ~0U, 0) == 0) return;
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  for (int fd = 3; fd < static_cast<int>(std::min<rlim_t>(files.rlim_cur, 1 << 20)); ++fd) ::close(fd);
}

// In the child, between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(char** argv, char** envp, const Command& command, const detail::SandboxPlan* sandbox,
                             pid_t parent, int out_fd, int err_fd) {
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(err_fd, STDERR_FILENO);
  close_inherited_descriptors();
  // An ignored signal stays ignored across exec: kiln ignores SIGPIPE (see
  // virt/connection.h), the programs it runs expect the default.
  ::signal(SIGPIPE, SIG_DFL);
  // Dies with the thread that forked it; if that happened already, now.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getppid() != parent) ::_exit(127);
  ::setsid();
  set_limit(RLIMIT_AS, command.limits.address_space_bytes);
  set_limit(RLIMIT_CPU, command.limits.cpu_seconds);
  set_limit(RLIMIT_FSIZE, command.limits.file_size_bytes);
  if (sandbox != nullptr) {
    set_limit(RLIMIT_CORE, 0);  // a core of qemu-img holds image data, and core_pattern may pipe to a host helper
    detail::enter_sandbox_and_exec(*sandbox);
  }
  ::execvpe(argv[0], argv, envp);
  const char message[] = "exec failed\n";
  [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
  ::_exit(127);
}

void append_bounded(std::string& sink, const char* data, std::size_t size) {
  std::size_t room = kMaxCapture > sink.size() ? kMaxCapture - sink.size() : 0;
  sink.append(data, std::min(room, size));
}

// Reads both pipes until they close or the deadline passes.
bool drain(int out_fd, int err_fd, CommandResult& result,
           std::chrono::steady_clock::time_point deadline) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_count = 2;
  char buffer[4096];
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    int ready = ::poll(fds, 2, static_cast<int>(left.count()));
    if (ready == 0) return false;  // deadline passed
    if (ready < 0) {
      if (errno == EINTR) continue;
      return true;  // nothing more can be read; the exit status tells the rest
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got > 0) {
        append_bounded(*sinks[i], buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  return true;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string describe(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) {
    if (!text.empty()) text += ' ';
    text += arg;
  }
  return text;
}

CommandResult run(const Command& command) {
  if (command.argv.empty()) throw Error(ErrorCode::kInvalidArgument, "empty command");
  std::vector<std::string> argv_strings = command.argv;
  std::vector<std::string> env_strings = child_environment();
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<char*> envp = pointers(env_strings);
  detail::SandboxPlanPtr sandbox;
  if (command.sandbox) sandbox = detail::plan_sandbox(*command.sandbox, command.argv[0], command.argv);
  Pipe out = make_pipe();
  Pipe err = make_pipe();

  auto deadline = std::chrono::steady_clock::now() + command.timeout;
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    throw Error(ErrorCode::kSubprocessFailed,
                "cannot start " + command.argv[0] + ": " + std::strerror(errno));
  }
  if (pid == 0) {
    exec_child(argv.data(), envp.data(), command, sandbox.get(), parent, out.write_end.get(), err.write_end.get());
  }

  out.write_end = UniqueFd();
  err.write_end = UniqueFd();
  CommandResult result;
  if (!drain(out.read_end.get(), err.read_end.get(), result, deadline)) {
    // The child leads its own session and process group (setsid): whatever
    // it started (mkfs's helpers, a shell's children) goes with it.
    ::kill(-pid, SIGKILL);
    result.timed_out = true;
  }
  result.exit_code = wait_for(pid);
  if (result.exit_code == 127 && result.err == "exec failed\n") {
    throw Error(ErrorCode::kSubprocessFailed, "cannot run " + command.argv[0] + ": not found or not executable");
  }
  if (sandbox && result.exit_code == kSandboxSetupFailed && result.err.starts_with(kSandboxErrorPrefix)) {
    std::string why = result.err.substr(kSandboxErrorPrefix.size());
    while (!why.empty() && why.back() == '\n') why.pop_back();
    throw Error(ErrorCode::kSubprocessFailed, "cannot run " + command.argv[0] + " in kiln's sandbox: " + why);
  }
  return result;
}

std::string run_checked(const Command& command) {
  CommandResult result = run(command);
  if (result.timed_out) {
    throw Error(ErrorCode::kSubprocessFailed,
                describe(command.argv) + " timed out after " +
                    std::to_string(command.timeout.count()) + " ms");
  }
  if (result.exit_code != 0) {
    std::string detail = result.err.empty() ? result.out : result.err;
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    throw Error(ErrorCode::kSubprocessFailed,
                describe(command.argv) + " failed with exit code " +
                    std::to_string(result.exit_code) + (detail.empty() ? "" : ": " + detail));
  }
  return result.out;
}

}  // namespace kiln
