// libFuzzer target: any bytes, inspected as an image, must neither crash, nor
// read more than kMaxInspectionBytes, nor throw anything but an inspection
// verdict, nor be called safe while it names another file.
//
// Differential oracle: qemu-img is the judge of what an image reaches. Each
// input the inspector calls safe as qcow2 or vmdk (the formats through which
// qemu 7.2 opens other files: backing and data files, extents, parent hints)
// is written to a private temporary file and given to
// `qemu-img info --output=json -f <format>` (killed after 2 s; inside bwrap
// with only that file bound read-only when /usr/bin/bwrap exists). If qemu
// reports a backing file, a data file or an extent other than the input, or
// fails to open a file other than the input, the input aborts as a crash.
// vhd, vhdx and vdi are not asked: qemu 7.2 opens no parent for any of them
// (vpc has no parent support, vhdx and vdi refuse a parent); raw, iso and the
// partition tables are read as raw; luks 1 names no other file.
// KILN_FUZZ_ORACLE=0 turns the oracle off; KILN_FUZZ_ORACLE=all asks about
// vhd, vhdx and vdi too. At exit the oracle prints how many
// inputs it judged and how many findings it had.
//
// Build and run (option KILN_FUZZ of the top-level CMakeLists.txt; seeds from make-seeds):
//   CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF
//   cmake --build build-fuzz --target fuzz_inspector
//   tests/fuzz/make-seeds seeds && build-fuzz/tests/fuzz/fuzz_inspector \
//     -dict=tests/fuzz/vmdk.dict -max_total_time=60 corpus seeds
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "kiln/image/inspector.h"
#include "kiln/util/error.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;

// The qemu driver to ask about an input of this format, or empty when qemu
// cannot reach another file through that format. `all` (KILN_FUZZ_ORACLE=all)
// asks about vhd, vhdx and vdi too, to check that claim by hand.
std::string_view qemu_driver_for(std::string_view format, bool all) {
  if (format == "qcow2" || format == "vmdk") return format;
  if (all && format == "vhd") return "vpc";
  if (all && (format == "vhdx" || format == "vdi")) return format;
  return {};
}

std::string read_all(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// Every value of `"key": "value"` in qemu's JSON (paths in qemu's output
// need no unescaping to be compared with ours).
std::vector<std::string> json_string_values(std::string_view json, std::string_view key) {
  std::vector<std::string> values;
  std::string pattern = "\"" + std::string(key) + "\": \"";
  for (auto at = json.find(pattern); at != std::string_view::npos;
       at = json.find(pattern, at + 1)) {
    std::size_t start = at + pattern.size();
    values.emplace_back(json.substr(start, json.find('"', start) - start));
  }
  return values;
}

// The names in qemu's "Could not open 'NAME'" messages.
std::vector<std::string> files_qemu_could_not_open(std::string_view messages) {
  std::vector<std::string> names;
  constexpr std::string_view kPrefix{"Could not open '"};
  for (auto at = messages.find(kPrefix); at != std::string_view::npos;
       at = messages.find(kPrefix, at + 1)) {
    std::size_t start = at + kPrefix.size();
    names.emplace_back(messages.substr(start, messages.find('\'', start) - start));
  }
  return names;
}

class QemuOracle {
 public:
  QemuOracle() {
    const char* setting = std::getenv("KILN_FUZZ_ORACLE");
    enabled_ = !(setting && std::string_view(setting) == "0") && on_path("qemu-img") &&
               on_path("timeout");
    all_formats_ = setting && std::string_view(setting) == "all";
    sandboxed_ = ::access("/usr/bin/bwrap", X_OK) == 0;
    if (!enabled_) return;
    char pattern[] = "/tmp/kiln-fuzz-oracle-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) std::abort();
    directory_ = pattern;
    input_ = directory_ / "input";
  }

  ~QemuOracle() {
    std::fprintf(stderr,
                 "oracle: %s%s; %zu inputs called safe, %zu judged by qemu-img (%zu repeats "
                 "skipped), %zu findings\n",
                 enabled_ ? "on" : "off (KILN_FUZZ_ORACLE=0 or no qemu-img)",
                 enabled_ ? (sandboxed_ ? ", qemu-img in bwrap" : ", qemu-img unsandboxed") : "",
                 safe_, judged_, repeats_, findings_);
    std::error_code ignored;
    if (!directory_.empty()) fs::remove_all(directory_, ignored);
  }

  // Aborts when qemu reaches a file other than the input the inspector called safe.
  void judge(std::string_view bytes, const kiln::image::Inspection& inspection) {
    ++safe_;
    std::string_view driver = qemu_driver_for(inspection.format, all_formats_);
    if (!enabled_ || driver.empty()) return;
    if (!seen_.insert(metadata_key(bytes)).second) {
      ++repeats_;
      return;
    }
    ++judged_;
    write_input(bytes);
    auto [exit_code, out, err] = run_qemu_img(driver);
    std::vector<std::string> reached;
    for (const char* key : {"backing-filename", "full-backing-filename", "data-file"}) {
      for (auto& value : json_string_values(out, key)) reached.push_back(value);
    }
    for (auto& name : json_string_values(out, "filename")) {
      if (name != input_.string()) reached.push_back(name);
    }
    for (auto& name : files_qemu_could_not_open(err)) {
      if (name != input_.string()) reached.push_back(name);
    }
    if (reached.empty()) return;
    ++findings_;
    std::fprintf(stderr,
                 "oracle: FINDING: the inspector called this %s safe, but qemu-img (exit %d) "
                 "reaches %s\n--- qemu-img stdout\n%s\n--- qemu-img stderr\n%s\n",
                 inspection.format.c_str(), exit_code, reached.front().c_str(), out.c_str(),
                 err.c_str());
    std::abort();
  }

 private:
  struct Outcome {
    int exit_code;
    std::string out;
    std::string err;
  };

  // Inputs that differ only in guest data are judged once: qemu finds other
  // files through headers alone, which for a qcow2 or vmdk the inspector
  // calls safe lie in the first 64 KiB (qcow2's header cluster as far as
  // extensions go, vmdk's header and 10 KiB of descriptor text) or in vmdk's
  // 1536-byte footer.
  static std::size_t metadata_key(std::string_view bytes) {
    constexpr std::size_t kHead = 64 * 1024;
    constexpr std::size_t kTail = 1536;
    std::hash<std::string_view> hash;
    std::size_t key = hash(bytes.substr(0, kHead));
    key ^= hash(bytes.substr(bytes.size() - std::min(bytes.size(), kTail))) * 31;
    return key ^ (bytes.size() * 0x9e3779b97f4a7c15ull);
  }

  static bool on_path(const char* program) {
    const char* path = std::getenv("PATH");
    std::string_view directories = path ? path : "/usr/bin:/bin";
    while (!directories.empty()) {
      auto colon = directories.find(':');
      fs::path candidate = fs::path(std::string(directories.substr(0, colon))) / program;
      if (::access(candidate.c_str(), X_OK) == 0) return true;
      directories = colon == std::string_view::npos ? "" : directories.substr(colon + 1);
    }
    return false;
  }

  void write_input(std::string_view bytes) {
    std::ofstream file(input_, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file.good()) std::abort();
  }

  std::vector<std::string> command(std::string_view driver) const {
    std::vector<std::string> argv{"timeout", "-s", "KILL", "2"};
    if (sandboxed_) {
      // Nothing of the host but /usr (programs and libraries) and the input.
      argv.insert(argv.end(), {"/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
                               "--new-session", "--ro-bind", "/usr", "/usr", "--symlink",
                               "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                               "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
                               "--ro-bind", input_.string(), input_.string(), "--"});
    }
    argv.insert(argv.end(), {"qemu-img", "info", "--output=json", "-f", std::string(driver),
                             input_.string()});
    return argv;
  }

  Outcome run_qemu_img(std::string_view driver) const {
    std::vector<std::string> arguments = command(driver);
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    fs::path out = directory_ / "out";
    fs::path err = directory_ / "err";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t child = 0;
    int spawned = ::posix_spawnp(&child, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) std::abort();
    int status = 0;
    while (::waitpid(child, &status, 0) < 0) {
      if (errno != EINTR) std::abort();
    }
    int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return {exit_code, read_all(out), read_all(err)};
  }

  bool enabled_ = false;
  bool all_formats_ = false;
  bool sandboxed_ = false;
  fs::path directory_;
  fs::path input_;
  std::unordered_set<std::size_t> seen_;
  std::size_t safe_ = 0;
  std::size_t judged_ = 0;
  std::size_t repeats_ = 0;
  std::size_t findings_ = 0;
};

// Destroyed at exit, when it prints its counts (libFuzzer exits through exit()).
QemuOracle oracle;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  kiln::image::InspectorPolicy policy;
  policy.max_virtual_size = std::uint64_t{1} << 40;
  kiln::image::Inspection inspection =
      kiln::image::inspect(kiln::image::MemorySource(bytes), policy);
  if (inspection.bytes_read > kiln::image::kMaxInspectionBytes) std::abort();
  if (inspection.format.empty()) std::abort();
  // An image called safe reaches no other file.
  if (inspection.safe()) {
    constexpr std::uint64_t kExternalDataFileBit = 1u << 2;
    bool references = !inspection.backing_file.empty() || !inspection.data_file.empty() ||
                      (inspection.incompatible_features & kExternalDataFileBit) != 0 ||
                      inspection.vmdk_extents.size() > 1 || inspection.format == "qed";
    if (references) std::abort();
    oracle.judge(bytes, inspection);
  }
  // One verdict per input: a throw costs ~100 us under ASan, the inspection ~10 us.
  const char* disk_format = size % 2 == 0 ? "raw" : inspection.format.c_str();
  try {
    kiln::image::require_safe(inspection, disk_format, "fuzz");
    if (!inspection.safe()) std::abort();
  } catch (const kiln::Error& error) {
    // The only errors require_safe may raise are the four inspection verdicts.
    switch (error.code()) {
      case kiln::ErrorCode::kImageUnsafe:
      case kiln::ErrorCode::kImageMalformed:
      case kiln::ErrorCode::kImageTooLarge:
      case kiln::ErrorCode::kImageFormatMismatch:
        break;
      default:
        std::abort();
    }
  }
  return 0;
}
