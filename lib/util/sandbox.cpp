#include "kiln/util/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "kiln/util/error.h"
#include "kiln/util/layout.h"

namespace kiln {

namespace fs = std::filesystem;

namespace {

std::string inside_path(std::string_view name) {
  if (name.empty() || name.find('/') != std::string_view::npos || name == "." || name == "..") {
    throw Error(ErrorCode::kInvalidArgument, "a sandbox file name must be one path component, not '" +
                                                 std::string(name) + "'");
  }
  static const std::set<std::string, std::less<>> reserved = {"usr", "lib",  "lib64", "lib32",
                                                              "libx32", "bin", "sbin",  "dev"};
  if (reserved.contains(name)) {
    throw Error(ErrorCode::kInvalidArgument, "'" + std::string(name) + "' is part of the sandbox's own root");
  }
  return "/" + std::string(name);
}

}  // namespace

std::string Sandbox::add_read_only(const fs::path& host, std::string_view name) {
  files.push_back({host, inside_path(name), false});
  return files.back().inside;
}

std::string Sandbox::add_writable(const fs::path& host, std::string_view name) {
  files.push_back({host, inside_path(name), true});
  return files.back().inside;
}

SandboxOutput::SandboxOutput(const fs::path& final_path) : final_path_(final_path) {
  fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  std::string pattern = layout::sandbox_template(final_path);
  if (::mkdtemp(pattern.data()) == nullptr) throw_io_error("cannot create a directory in " + parent.string(), errno);
  directory_ = pattern;  // mkdtemp: mode 0700, kiln's
  path_ = directory_ / "file";
  try {
    UniqueFd fd = open_file(path_, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (::fchown(fd.get(), kSandboxUid, kSandboxGid) != 0) {
      throw_io_error("cannot give " + path_.string() + " to the sandbox user", errno);
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
    throw;
  }
}

SandboxOutput::~SandboxOutput() {
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

std::uint64_t SandboxOutput::size() const { return kiln::file_size(path_); }

void SandboxOutput::publish() {
  // Back to kiln before it has a public name: the sandbox user never owns a published file.
  if (::chown(path_.c_str(), ::geteuid(), ::getegid()) != 0 || ::chmod(path_.c_str(), 0644) != 0) {
    throw_io_error("cannot take " + path_.string() + " back from the sandbox user", errno);
  }
  if (::rename(path_.c_str(), final_path_.c_str()) != 0) throw_io_error("cannot rename to " + final_path_.string(), errno);
  published_ = true;
}

namespace detail {

// One step of building the root, in order. Paths are absolute, under the
// staging directory the new root is mounted on.
struct RootStep {
  enum Kind { kMkdir, kSymlink, kBindDirectory, kBindDevice, kBindFile } kind;
  std::string target;  // the path created or mounted on
  std::string source;  // symlink text, or the host path bound
  bool read_only = true;
  dev_t device = 0;    // kBindFile: the inode kiln identified before fork
  ino_t inode = 0;
  mutable int fd = -1;  // in the builder: the source opened in its own mount namespace
};

struct SandboxPlan {
  std::string root;  // an existing directory the new root's tmpfs is mounted on
  std::vector<RootStep> steps;
  std::string id_map;  // the sandbox user, to itself
  std::string program;  // absolute, under /usr
  std::vector<std::string> argv_strings;
  std::vector<std::string> env_strings{"LC_ALL=C", "LANG=C", "PATH=/usr/bin:/bin"};
  std::vector<char*> argv;
  std::vector<char*> envp;
};

void SandboxPlanDeleter::operator()(SandboxPlan* plan) const { delete plan; }

namespace {

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

fs::path resolve_program(const std::string& program) {
  fs::path found;
  if (program.find('/') != std::string::npos) {
    found = program;
  } else {
    const char* path = std::getenv("PATH");
    std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
    while (found.empty()) {
      auto colon = dirs.find(':');
      fs::path candidate = fs::path(dirs.substr(0, colon)) / program;
      if (::access(candidate.c_str(), X_OK) == 0) found = candidate;
      if (colon == std::string_view::npos) break;
      dirs.remove_prefix(colon + 1);
    }
  }
  std::error_code error;
  fs::path real = found.empty() ? fs::path() : fs::canonical(found, error);
  if (real.empty() || error) {
    throw Error(ErrorCode::kSubprocessFailed, "cannot run " + program + ": not found or not executable");
  }
  if (!real.string().starts_with("/usr/")) {
    throw Error(ErrorCode::kSubprocessFailed, "cannot sandbox " + real.string() +
                                                  ": only programs under /usr can run in kiln's sandbox");
  }
  return real;
}

// The host's /lib, /lib64, /bin...: merged-/usr symlinks are copied as links,
// real directories bound read-only, absent ones left out.
void plan_system_directories(SandboxPlan& plan) {
  plan.steps.push_back({RootStep::kMkdir, plan.root + "/usr", "", true});
  plan.steps.push_back({RootStep::kBindDirectory, plan.root + "/usr", "/usr", true});
  for (const char* name : {"lib", "lib64", "lib32", "libx32", "bin", "sbin"}) {
    fs::path host = fs::path("/") / name;
    std::error_code error;
    auto status = fs::symlink_status(host, error);
    if (error || !fs::exists(status)) continue;
    std::string target = plan.root + "/" + name;
    if (fs::is_symlink(status)) {
      plan.steps.push_back({RootStep::kSymlink, target, fs::read_symlink(host).string(), true});
    } else if (fs::is_directory(status)) {
      plan.steps.push_back({RootStep::kMkdir, target, "", true});
      plan.steps.push_back({RootStep::kBindDirectory, target, host.string(), true});
    }
  }
  // Without /dev/null qemu-img cannot probe OFD locks and silently disables
  // image locking. Nothing else of /dev: /dev/zero would be an endless extent.
  plan.steps.push_back({RootStep::kMkdir, plan.root + "/dev", "", true});
  plan.steps.push_back({RootStep::kBindDevice, plan.root + "/dev/null", "/dev/null", false});
}

void plan_files(SandboxPlan& plan, const Sandbox& sandbox) {
  std::set<std::string> seen;
  for (const SandboxFile& file : sandbox.files) {
    if (!seen.insert(file.inside).second) {
      throw Error(ErrorCode::kInvalidArgument, "sandbox file " + file.inside + " is given twice");
    }
    // Bound by path in the child's own mount namespace (a descriptor from
    // this one cannot be bound there), so identified here and checked there:
    // a path swapped in between is refused, not followed.
    fs::path absolute = fs::absolute(file.host);
    struct stat st{};
    if (::stat(absolute.c_str(), &st) != 0) {
      throw Error(ErrorCode::kSubprocessFailed,
                  "cannot give " + absolute.string() + " to the sandbox: " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      throw Error(ErrorCode::kSubprocessFailed, "cannot give " + absolute.string() + " to the sandbox: not a regular file");
    }
    plan.steps.push_back({RootStep::kBindFile, plan.root + file.inside, absolute.string(), !file.writable,
                          st.st_dev, st.st_ino});
  }
}

// Where the new root is mounted in the child's own mount namespace before
// pivot_root: any directory that exists will do.
std::string staging_directory() {
  for (const char* candidate : {"/tmp", "/mnt", "/run", "/var/tmp"}) {
    if (fs::is_directory(candidate)) return candidate;
  }
  throw Error(ErrorCode::kSubprocessFailed, "cannot sandbox: none of /tmp, /mnt, /run exists to build a root on");
}

// --- In the children from here: system calls only. ---

std::size_t format_number(char* out, std::size_t room, unsigned long value) {
  char digits[24];
  std::size_t count = 0;
  do {
    digits[count++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0 && count < sizeof digits);
  std::size_t length = 0;
  while (count > 0 && length < room) out[length++] = digits[--count];
  return length;
}

[[noreturn]] void die(const char* step) {
  int error = errno;
  char buffer[200];
  std::size_t length = 0;
  auto append = [&](const char* text) {
    while (*text != '\0' && length < sizeof buffer - 1) buffer[length++] = *text++;
  };
  append(kSandboxErrorPrefix.data());
  append(step);
  append(": errno ");
  length += format_number(buffer + length, sizeof buffer - 1 - length, static_cast<unsigned long>(error));
  buffer[length++] = '\n';
  [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, buffer, length);
  ::_exit(kSandboxSetupFailed);
}

void write_map(pid_t pid, const char* file, const std::string& content) {
  char path[64] = "/proc/";
  std::size_t length = 6;
  length += format_number(path + length, 20, static_cast<unsigned long>(pid));
  path[length++] = '/';
  for (const char* c = file; *c != '\0' && length < sizeof path - 1; ++c) path[length++] = *c;
  path[length] = '\0';
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(file);
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) die(file);
  ::close(fd);
}

// Remount of a bind mount, tighter. In a user namespace the flags the mount
// came with (nosuid, nodev, noexec, atime) are locked and must be repeated.
void restrict_mount(const char* target, bool read_only, bool executable) {
  struct statvfs info{};
  if (::statvfs(target, &info) != 0) die("statvfs of a bind mount");
  unsigned long locked = info.f_flag & (ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_NOATIME | ST_NODIRATIME | ST_RELATIME);
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | locked;
  if (read_only) flags |= MS_RDONLY;
  if (!executable) flags |= MS_NOEXEC;
  if (::mount(nullptr, target, nullptr, flags, nullptr) != 0) die("remount of a bind mount");
}

// Files are opened before the new root's tmpfs is mounted (it may hide
// them, on /tmp say), in this mount namespace (a descriptor from kiln's own
// cannot be bound here), and checked to be the inodes kiln identified: a path
// swapped in between is refused, not followed.
void open_file_sources(const SandboxPlan& plan) {
  for (const RootStep& step : plan.steps) {
    if (step.kind != RootStep::kBindFile && step.kind != RootStep::kBindDevice) continue;
    step.fd = ::open(step.source.c_str(), O_PATH | O_CLOEXEC);
    if (step.fd < 0) die("open a file given to the sandbox");
    struct stat st{};
    if (::fstat(step.fd, &st) != 0) die("stat a file given to the sandbox");
    if (step.kind == RootStep::kBindFile && (st.st_dev != step.device || st.st_ino != step.inode)) {
      errno = ESTALE;
      die("a file given to the sandbox was replaced before it was bound");
    }
  }
}

void bind_file(const RootStep& step) {
  const char* target = step.target.c_str();
  int fd = ::open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) die("create a mount point in the new root");
  ::close(fd);
  char source[40] = "/proc/self/fd/";
  std::size_t length = std::strlen(source);
  length += format_number(source + length, sizeof source - 1 - length, static_cast<unsigned long>(step.fd));
  source[length] = '\0';
  if (::mount(source, target, nullptr, MS_BIND, nullptr) != 0) die("bind mount of a file");
}

void run_step(const RootStep& step) {
  const char* target = step.target.c_str();
  switch (step.kind) {
    case RootStep::kMkdir:
      if (::mkdir(target, 0755) != 0) die("mkdir in the new root");
      return;
    case RootStep::kSymlink:
      if (::symlink(step.source.c_str(), target) != 0) die("symlink in the new root");
      return;
    case RootStep::kBindDirectory:
      if (::mount(step.source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr) != 0) die("bind mount of a directory");
      restrict_mount(target, true, true);
      return;
    case RootStep::kBindDevice:
      bind_file(step);
      return;
    case RootStep::kBindFile:
      bind_file(step);
      restrict_mount(target, step.read_only, false);  // data, never a program
      return;
  }
}

// From here on the builder is the sandbox user (the only id mapped in its
// namespace), and keeps its capabilities there: the uid it leaves, host
// root, is not root of that namespace, so the change clears nothing.
// The process that forked the builder (set before the fork): the builder
// must not outlive it.
pid_t builder_parent = -1;

void become_sandbox_user() {
  if (::setgroups(0, nullptr) != 0) die("setgroups");
  if (::setresgid(kSandboxGid, kSandboxGid, kSandboxGid) != 0) die("setresgid");
  if (::setresuid(kSandboxUid, kSandboxUid, kSandboxUid) != 0) die("setresuid");
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");  // cleared by the uid change
  // A parent killed while the death signal was cleared sent none: go now.
  if (::getppid() != builder_parent) die("the process that started the sandbox is gone");
}

void build_root(const SandboxPlan& plan) {
  const char* root = plan.root.c_str();
  // Nothing done here may propagate back to the host's mounts.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("make mounts private");
  // Still host root here (unmapped in its namespace): owner of root's files
  // and directories, so it can open what kiln named even under a 0700 one.
  open_file_sources(plan);
  become_sandbox_user();
  if (::mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k,nr_inodes=64") != 0) {
    die("mount the new root");
  }
  for (const RootStep& step : plan.steps) run_step(step);
  if (::mount(nullptr, root, nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
    die("make the new root read-only");
  }
  // pivot_root(".", ".") stacks the old root under the new one; detaching it
  // leaves the new root alone, with no path back to the host.
  if (::chdir(root) != 0) die("chdir to the new root");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) die("detach the old root");
  if (::chdir("/") != 0) die("chdir /");
}

// The program itself: pid 1 of the new pid namespace (it sees no other
// process, and all it starts dies with it).
[[noreturn]] void exec_program(const SandboxPlan& plan) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");
  // Empty bounding set: no file capability can ever come back, even past no_new_privs.
  for (int capability = 0; capability <= 63; ++capability) {
    if (::prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 && errno != EINVAL) die("PR_CAPBSET_DROP");
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS");
  // Not root in its namespace: exec leaves it no capability.
  ::execve(plan.program.c_str(), plan.argv.data(), plan.envp.data());
  die("execve");
}

[[noreturn]] void exit_like(int status) {
  if (WIFSIGNALED(status)) ::_exit(128 + WTERMSIG(status));
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  return status;
}

// In new namespaces (every capability there, none outside): waits for its
// id maps, builds the root, runs the program as its child and exits with its
// status.
[[noreturn]] void build_and_run(const SandboxPlan& plan, int ready_fd, int go_fd) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");
  constexpr int kNamespaces =
      CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  if (::unshare(kNamespaces) != 0) die("unshare (are user namespaces allowed?)");
  char byte = 1;
  if (::write(ready_fd, &byte, 1) != 1) die("tell the parent the namespaces exist");
  if (::read(go_fd, &byte, 1) != 1) ::_exit(kSandboxSetupFailed);  // the parent reported why
  build_root(plan);
  pid_t pid = ::fork();
  if (pid < 0) die("fork into the pid namespace");
  if (pid == 0) exec_program(plan);
  exit_like(wait_child(pid));
}

}  // namespace

SandboxPlanPtr plan_sandbox(const Sandbox& sandbox, const std::string& program, std::vector<std::string> argv) {
  SandboxPlanPtr plan(new SandboxPlan);
  // Only the sandbox user: mapping host root at all would need CAP_SETFCAP
  // (Linux 5.12+), and nothing in the sandbox needs it.
  plan->id_map = std::to_string(kSandboxUid) + " " + std::to_string(kSandboxUid) + " 1\n";
  static_assert(kSandboxUid == kSandboxGid, "one map serves both");
  plan->program = resolve_program(program).string();
  plan->root = staging_directory();
  plan_system_directories(*plan);
  plan_files(*plan, sandbox);
  plan->argv_strings = std::move(argv);
  plan->argv = pointers(plan->argv_strings);
  plan->envp = pointers(plan->env_strings);
  return plan;
}

void enter_sandbox_and_exec(const SandboxPlan& plan) {
  int ready[2];
  int go[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) die("pipe");
  builder_parent = ::getpid();
  pid_t builder = ::fork();
  if (builder < 0) die("fork");
  if (builder == 0) {
    ::close(ready[0]);
    ::close(go[1]);
    build_and_run(plan, ready[1], go[0]);
  }
  ::close(ready[1]);
  ::close(go[0]);
  char byte = 0;
  if (::read(ready[0], &byte, 1) != 1) exit_like(wait_child(builder));  // it died and said why
  // Mapping ids other than one's own takes CAP_SETUID/CAP_SETGID here, in
  // the parent namespace: the builder cannot do it for itself.
  write_map(builder, "uid_map", plan.id_map);
  write_map(builder, "gid_map", plan.id_map);
  if (::write(go[1], &byte, 1) != 1) die("tell the builder to go on");
  exit_like(wait_child(builder));
}

}  // namespace detail

}  // namespace kiln
