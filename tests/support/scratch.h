// Test helpers shared by unit and integration tests.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace kiln::test {

// A fresh directory under /tmp (mode 0711 so QEMU, running as libvirt-qemu,
// can reach disks inside), removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A random version-4 UUID from the kernel.
std::string random_uuid();

void write_text(const std::filesystem::path& path, const std::string& text);

// The KEY=VALUE lines of a fixture's env file (tools/peers/start, tools/peers/ceph,
// the Keystone peer); nullopt when the file is missing (the fixture did not run).
std::optional<std::map<std::string, std::string>> read_env_file(const std::filesystem::path& path);

// Every file and directory under `root` with its size, one per line, sorted:
// a snapshot to prove that a failed command changed nothing.
std::string tree_listing(const std::filesystem::path& root);

// Every file and directory under `root` with its size and mtime (ns): two
// snapshots are equal only when nothing was created, removed, resized or
// written.
std::string tree_snapshot(const std::filesystem::path& root);

}  // namespace kiln::test
