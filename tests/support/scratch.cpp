#include "scratch.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <stdexcept>

#include "kiln/util/fs.h"

namespace kiln::test {

namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  std::string pattern = "/tmp/kiln-test.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
  ::chmod(path_.c_str(), 0711);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

std::string random_uuid() {
  std::string uuid = kiln::read_file("/proc/sys/kernel/random/uuid");
  while (!uuid.empty() && uuid.back() == '\n') uuid.pop_back();
  return uuid;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string tree_listing(const fs::path& root) {
  std::set<std::string> lines;
  std::error_code error;
  if (!fs::exists(root, error)) return "";
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    std::string line = fs::relative(entry.path(), root).string();
    if (entry.is_regular_file()) line += " " + std::to_string(entry.file_size());
    if (entry.is_directory()) line += "/";
    lines.insert(line);
  }
  std::string listing;
  for (const auto& line : lines) listing += line + "\n";
  return listing;
}

std::string tree_snapshot(const fs::path& root) {
  std::set<std::string> lines;
  std::error_code error;
  if (!fs::exists(root, error)) return "";
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0) continue;
    lines.insert(fs::relative(entry.path(), root).string() + " size=" + std::to_string(info.st_size) +
                 " mtime=" + std::to_string(info.st_mtim.tv_sec) + "." + std::to_string(info.st_mtim.tv_nsec));
  }
  std::string snapshot;
  for (const auto& line : lines) snapshot += line + "\n";
  return snapshot;
}

std::optional<std::map<std::string, std::string>> read_env_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::map<std::string, std::string> values;
  for (std::string line; std::getline(in, line);) {
    auto equals = line.find('=');
    if (equals != std::string::npos) values[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return values;
}

}  // namespace kiln::test
