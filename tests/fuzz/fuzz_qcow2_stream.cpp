// libFuzzer target: any bytes, streamed as a qcow2 image through
// image::Qcow2Stream in chunks of an input-dependent size, must neither crash
// nor throw nor trip ASan/UBSan; giving up must leave no output; a digest it
// computed while writing must be its output's; and whenever it says its output
// is complete, that output must be what qemu-img makes of the same bytes.
//
// Differential oracle (the claim of kiln/image/qcow2_stream.h): for every input
// the stream converts, `qemu-img convert -f qcow2 -O raw` of the same bytes
// (killed after 2 s; inside bwrap with only the input, read-only, and an output
// directory bound, when /usr/bin/bwrap exists) must succeed and write the same
// bytes. When it does not, the fetch would still never use the stream's output
// if qemu-img's second opinion stops the image first: so a mismatch is a
// finding only when `qemu-img info` opens the input and reports the virtual
// size the stream read (what lib/cache/fetch.cpp requires before it uses the
// output). Inputs the stream gives up on are not judged (giving up is always
// allowed: qemu-img converts them). Inputs whose virtual size passes 64 MiB are
// streamed but not judged. KILN_FUZZ_ORACLE=0 turns the oracle off. At exit it
// prints how many inputs the stream converted, how many qemu-img judged, how
// many qemu-img refused or read otherwise (gated: the fetch would fall back)
// and the findings (KILN_FUZZ_SHOW_GATED=1 prints why each was gated).
//
// Build and run (tools/fuzz-qcow2-stream does this, with seeds from
// tests/fuzz/make-qcow2-seeds):
//   CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF
//   cmake --build build-fuzz --target fuzz_qcow2_stream
//   tests/fuzz/make-qcow2-seeds seeds && build-fuzz/tests/fuzz/fuzz_qcow2_stream -max_total_time=60 corpus seeds
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/image/qcow2_stream.h"
#include "kiln/util/data_digest.h"
#include "kiln/util/fs.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMaxJudgedVirtualSize = 64u << 20;

std::string read_all(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// The virtual size in qemu-img info's JSON, or -1.
long long json_virtual_size(const std::string& json) {
  constexpr std::string_view kKey = "\"virtual-size\": ";
  auto at = json.find(kKey);
  if (at == std::string::npos) return -1;
  return std::strtoll(json.c_str() + at + kKey.size(), nullptr, 10);
}

class Oracle {
 public:
  Oracle() {
    const char* setting = std::getenv("KILN_FUZZ_ORACLE");
    enabled_ = !(setting && std::string_view(setting) == "0") && ::access("/usr/bin/qemu-img", X_OK) == 0;
    sandboxed_ = ::access("/usr/bin/bwrap", X_OK) == 0;
    // tmpfs when there is one: the stream's output and qemu-img's never touch a disk.
    fs::path parent = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string pattern = (parent / "kiln-fuzz-qcow2-stream-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    directory_ = pattern;
    fs::create_directory(directory_ / "out");
    input_ = directory_ / "input.qcow2";
    streamed_ = directory_ / "streamed.raw";
    judged_output_ = directory_ / "out" / "qemu.raw";
  }

  ~Oracle() {
    std::fprintf(stderr,
                 "oracle: %s%s; %zu inputs converted by the stream, %zu judged by qemu-img, %zu equal, "
                 "%zu gated (qemu-img refuses the image or reads another virtual size), %zu findings\n",
                 enabled_ ? "on" : "off (KILN_FUZZ_ORACLE=0 or no qemu-img)",
                 enabled_ ? (sandboxed_ ? ", qemu-img in bwrap" : ", qemu-img unsandboxed") : "", converted_,
                 judged_, equal_, gated_, findings_);
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }

  const fs::path& streamed() const { return streamed_; }
  void converted() { ++converted_; }

  // Aborts when qemu-img, which would let the fetch use the stream's output,
  // makes something else of `bytes`.
  void judge(std::string_view bytes, std::uint64_t virtual_size) {
    if (!enabled_ || virtual_size > kMaxJudgedVirtualSize) return;
    ++judged_;
    write_input(bytes);
    std::error_code ignored;
    fs::remove(judged_output_, ignored);
    Outcome convert = run_qemu_img({"convert", "-f", "qcow2", "-O", "raw", input_.string(), judged_output_.string()});
    if (convert.exit_code == 0 && read_all(streamed_) == read_all(judged_output_)) {
      ++equal_;
      return;
    }
    Outcome info = run_qemu_img({"info", "--output=json", "-f", "qcow2", input_.string()});
    if (info.exit_code != 0 || json_virtual_size(info.out) != static_cast<long long>(virtual_size)) {
      ++gated_;
      if (std::getenv("KILN_FUZZ_SHOW_GATED")) {
        std::fprintf(stderr, "oracle: gated: convert exit %d: %s; info exit %d: %s%s\n", convert.exit_code,
                     convert.err.c_str(), info.exit_code, info.err.c_str(), info.exit_code == 0 ? info.out.c_str() : "");
      }
      return;
    }
    ++findings_;
    std::fprintf(stderr,
                 "oracle: FINDING: the stream converted this image (virtual size %llu) and qemu-img info agrees, "
                 "but qemu-img convert %s\n--- convert stderr\n%s\n",
                 static_cast<unsigned long long>(virtual_size),
                 convert.exit_code == 0 ? "writes other bytes" : "fails", convert.err.c_str());
    std::abort();
  }

 private:
  struct Outcome {
    int exit_code;
    std::string out;
    std::string err;
  };

  void write_input(std::string_view bytes) {
    std::ofstream file(input_, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!file.good()) std::abort();
  }

  Outcome run_qemu_img(const std::vector<std::string>& arguments) const {
    std::vector<std::string> command{"/usr/bin/timeout", "-s", "KILL", "2"};
    if (sandboxed_) {
      // Nothing of the host but /usr, the input (read-only) and the output directory.
      fs::path out = judged_output_.parent_path();
      command.insert(command.end(), {"/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                                     "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink",
                                     "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc",
                                     "--dev", "/dev", "--ro-bind", input_.string(), input_.string(), "--bind",
                                     out.string(), out.string(), "--"});
    }
    command.push_back("qemu-img");
    command.insert(command.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (auto& argument : command) argv.push_back(argument.data());
    argv.push_back(nullptr);
    fs::path out = directory_ / "stdout";
    fs::path err = directory_ / "stderr";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t child = 0;
    int spawned = ::posix_spawn(&child, argv[0], &actions, nullptr, argv.data(), environ);
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
  bool sandboxed_ = false;
  fs::path directory_;
  fs::path input_;
  fs::path streamed_;
  fs::path judged_output_;
  std::size_t converted_ = 0;
  std::size_t judged_ = 0;
  std::size_t equal_ = 0;
  std::size_t gated_ = 0;
  std::size_t findings_ = 0;
};

// Destroyed at exit, when it prints its counts (libFuzzer exits through exit()).
Oracle oracle;

// The image as the complete .part the fetch hands to finish(): a memfd, so
// that inputs the stream gives up on cost no file.
kiln::UniqueFd memory_file(const std::uint8_t* data, std::size_t size) {
  kiln::UniqueFd fd(::memfd_create("fuzz-qcow2-stream", MFD_CLOEXEC));
  if (!fd.valid()) std::abort();
  std::size_t done = 0;
  while (done < size) {
    ssize_t count = ::write(fd.get(), data + done, size - done);
    if (count <= 0) std::abort();
    done += static_cast<std::size_t>(count);
  }
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path& streamed = oracle.streamed();
  std::error_code ignored;
  fs::remove(streamed, ignored);
  // Chunk sizes from 1 byte to 64 KiB, so that tables and clusters straddle
  // chunk boundaries; derived from the input so that the fuzzer varies them.
  std::uint64_t mix = size * 0x9e3779b97f4a7c15ull;
  if (size > 0) mix ^= data[size / 2] * 2654435761u;
  const std::size_t chunk = 1 + mix % 65536;
  kiln::image::Qcow2Stream stream(streamed, size);
  const char* bytes = reinterpret_cast<const char*>(data);
  for (std::size_t at = 0; at < size; at += chunk) stream.feed({bytes + at, std::min(chunk, size - at)});
  kiln::UniqueFd whole = memory_file(data, size);
  const bool ok = stream.finish(whole.get());
  if (ok == stream.failed()) std::abort();
  if (!ok) {
    if (fs::exists(streamed)) std::abort();  // giving up leaves no output
    if (stream.why().empty()) std::abort();
    return 0;
  }
  oracle.converted();
  if (!stream.virtual_size() || fs::file_size(streamed) != *stream.virtual_size()) std::abort();
  // A digest computed while writing is the output's.
  if (auto digest = stream.take_digest(); digest && *digest != kiln::data_digest_of_file(streamed)) {
    std::fprintf(stderr, "the digest computed while writing is not the output's\n");
    std::abort();
  }
  oracle.judge({bytes, size}, *stream.virtual_size());
  return 0;
}
