// Where a helper program that reads untrusted files (qemu-img) runs: a place
// where it can open nothing but the files it was handed.
//
// Promise: a Command with a Sandbox (see kiln/util/subprocess.h) runs in new
// user, mount, pid, network, ipc, uts and cgroup namespaces, under an empty
// read-only root that holds only /usr (read-only), the host's /lib* and /bin
// links (or read-only binds where they are directories), /dev/null, and each
// file added here, bound alone at its own name (read-only unless added as
// writable). Never a directory: a file name an image invents cannot reach a
// sibling. The program runs as an unprivileged host uid (kSandboxUid), so
// even out of its namespaces it is nobody; with no_new_privs, no capabilities
// after exec, an environment of only LC_ALL/LANG/PATH, no network (a new
// network namespace has only a down loopback), no core dumps, and it dies
// with kiln (PR_SET_PDEATHSIG). Its resource limits and timeout are the
// Command's: the sandbox limits what is reachable, not what is consumed.
//
// Mechanism: kiln's own fork children, not bubblewrap. bwrap 0.8 reads
// /proc/sys/kernel/overflowuid and dies where /proc/sys is hidden, as in
// kilnd.service (ProcSubset=pid), and needs capset/chroot/setuid inside. Here:
// a child of kiln (root) forks a builder that unshares its namespaces; the
// first writes the builder's uid/gid maps (kSandboxUid to itself, nothing
// else: this needs CAP_SETUID/CAP_SETGID, and mapping host root would also
// need CAP_SETFCAP). The builder, still host root and so owner of root's
// directories, opens the files by path (checking each is the inode kiln
// identified), becomes kSandboxUid while keeping its capabilities in its own
// namespace, builds and pivots into the new root, and forks the program as
// pid 1 of its pid namespace; exec leaves it no capability. Cost: 2.5-5 ms
// per run over plain qemu-img on the test VM (bwrap via setpriv: about 11).
//
// REQUIRES: kiln runs as root (CAP_SETUID, CAP_SETGID), the kernel allows user
// namespaces, the program lives under /usr, and the files are readable
// (writable) by kSandboxUid.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/util/fs.h"

namespace kiln {

// "nobody": no files of its own on a host, no groups. kiln makes the files a
// sandboxed program writes its own only while it writes them (SandboxOutput).
inline constexpr uid_t kSandboxUid = 65534;
inline constexpr gid_t kSandboxGid = 65534;

struct SandboxFile {
  std::filesystem::path host;
  std::string inside;  // where the program sees it: "/" + one name component
  bool writable = false;
};

struct Sandbox {
  // Each returns the path the program sees, for its argv. `name` is one path
  // component ("input"); names must be distinct and not clash with the root's
  // own entries (usr, lib..., bin, sbin, dev).
  std::string add_read_only(const std::filesystem::path& host, std::string_view name);
  std::string add_writable(const std::filesystem::path& host, std::string_view name);

  std::vector<SandboxFile> files;
};

// A new file for a sandboxed program to write (e.g. qemu-img's output): made
// in a private directory (root's, mode 0700, next to where it will live) and
// owned by kSandboxUid only while it is written, so no host process running
// as that uid can reach it; publish() gives it back to kiln's uid (mode 0644)
// and only then renames it to its final name. Destroyed unpublished, it and
// its directory are removed: a failed run leaves nothing.
class SandboxOutput {
 public:
  explicit SandboxOutput(const std::filesystem::path& final_path);
  ~SandboxOutput();
  SandboxOutput(const SandboxOutput&) = delete;
  SandboxOutput& operator=(const SandboxOutput&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::uint64_t size() const;
  // Renames the file to the path given at construction (replacing it).
  void publish();

 private:
  std::filesystem::path final_path_;
  std::filesystem::path directory_;
  std::filesystem::path path_;
  bool published_ = false;
};

namespace detail {

// Everything the child needs to build the sandbox, computed before fork so
// that the child only makes system calls (fork in a threaded process: no
// allocation, no locks). Internal to run().
struct SandboxPlan;

struct SandboxPlanDeleter {
  void operator()(SandboxPlan* plan) const;
};
using SandboxPlanPtr = std::unique_ptr<SandboxPlan, SandboxPlanDeleter>;

// Resolves `program` (on PATH unless it holds a '/'), identifies the host
// files (device and inode) and lays out the steps. Throws kiln::Error kSubprocessFailed when the program is
// not under /usr or a file cannot be opened, kInvalidArgument for a bad name.
SandboxPlanPtr plan_sandbox(const Sandbox& sandbox, const std::string& program,
                            std::vector<std::string> argv);

// In the forked child (root), after stdio and rlimits are set: forks the
// namespaced builder, maps its ids, waits for it and exits with the program's
// status. Never returns; on a failed
// step writes "kiln sandbox: <step>: errno N" to stderr and exits 125.
[[noreturn]] void enter_sandbox_and_exec(const SandboxPlan& plan);

}  // namespace detail

// Exit status of a child whose sandbox could not be built (its stderr says why).
inline constexpr int kSandboxSetupFailed = 125;
inline constexpr std::string_view kSandboxErrorPrefix = "kiln sandbox: ";

}  // namespace kiln
