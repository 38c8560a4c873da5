// libFuzzer target: any bytes, streamed as a qcow2 image through
// image::Qcow2Stream in chunks of an input-dependent size, must neither crash
// nor throw; and whenever the stream says its output is complete, qemu-img
// (the judge) must convert the same bytes to the same raw file.
//
// Differential oracle: the input is written to a private temporary directory,
// streamed to stream.raw, and `qemu-img convert -f qcow2 -O raw` (under
// `timeout 2`) makes qemu.raw. A stream that succeeded where qemu-img failed,
// or whose output differs from qemu-img's by one byte, aborts as a crash.
// Inputs whose virtual size passes 64 MiB are streamed but not judged (qemu-img
// would spend the run writing zeros). KILN_FUZZ_ORACLE=0 turns the oracle off.
//
// Build and run (option KILN_FUZZ of the top-level CMakeLists.txt; seeds from make-seeds):
//   CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DKILN_FUZZ=ON -DKILN_TESTS=OFF
//   cmake --build build-fuzz --target fuzz_qcow2_stream
//   tests/fuzz/make-seeds seeds && build-fuzz/tests/fuzz/fuzz_qcow2_stream -max_total_time=60 corpus seeds
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "kiln/image/qcow2_stream.h"
#include "kiln/util/fs.h"

namespace {

namespace fs = std::filesystem;

std::string read_all(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

const fs::path& private_directory() {
  static const fs::path directory = [] {
    std::string pattern = (fs::temp_directory_path() / "fuzz-qcow2-stream.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    return fs::path(pattern);
  }();
  return directory;
}

bool oracle_on() {
  const char* value = std::getenv("KILN_FUZZ_ORACLE");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path& directory = private_directory();
  const fs::path image = directory / "image.qcow2";
  const fs::path streamed = directory / "stream.raw";
  const fs::path judged = directory / "qemu.raw";
  std::error_code ignored;
  fs::remove(streamed, ignored);
  fs::remove(judged, ignored);
  {
    std::ofstream out(image, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  // Chunk sizes from 1 byte to 64 KiB, so that tables straddle chunk boundaries.
  const std::size_t chunk = 1 + (size * 2654435761u) % 65536;
  kiln::image::Qcow2Stream stream(streamed, size);
  const char* bytes = reinterpret_cast<const char*>(data);
  for (std::size_t at = 0; at < size; at += chunk) stream.feed({bytes + at, std::min(chunk, size - at)});
  bool ok = false;
  {
    kiln::UniqueFd fd = kiln::open_file(image, O_RDONLY);
    ok = stream.finish(fd.get());
  }
  if (!ok) {
    if (fs::exists(streamed)) std::abort();  // giving up leaves no output
    return 0;
  }
  if (!oracle_on() || *stream.virtual_size() > (64u << 20)) return 0;
  std::string command = "timeout 2 qemu-img convert -f qcow2 -O raw '" + image.string() + "' '" + judged.string() +
                        "' >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "the stream converted an image qemu-img refuses\n");
    std::abort();
  }
  if (read_all(streamed) != read_all(judged)) {
    std::fprintf(stderr, "the stream's raw differs from qemu-img's\n");
    std::abort();
  }
  return 0;
}
