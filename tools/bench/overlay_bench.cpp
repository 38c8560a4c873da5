// kiln_overlay_bench: the time one qcow2 overlay takes to create, by writer.
//
//   kiln_overlay_bench <directory> <count> <native|native-unsynced|qemu-img> [virtual size in bytes]
//
// Makes a 64 MiB raw base in <directory>, creates <count> overlays of it
// (default 20 GiB) with kiln::disk::create_overlay, one after another, and
// prints the median wall time per overlay in microseconds. The qemu-img
// writer pays for a process per overlay, as kiln would in production.
// "native" fsyncs each overlay (Durability::kSynced); "native-unsynced" does
// not, as provision() does (it syncs the instance's files together) and as
// qemu-img never does: the like-for-like comparison with qemu-img.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/disk/overlay.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t kBaseSize = 64ULL << 20;
constexpr std::uint64_t kDefaultVirtualSize = 20ULL << 30;

fs::path make_base(const fs::path& directory) {
  fs::path base = directory / "base";
  fs::remove(base);
  kiln::atomic_write_file(base, "");
  fs::resize_file(base, kBaseSize);
  return base;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc >= 4 ? argv[3] : "";
  if (argc < 4 || argc > 5 || (mode != "native" && mode != "native-unsynced" && mode != "qemu-img")) {
    std::fprintf(stderr, "usage: %s <directory> <count> <native|native-unsynced|qemu-img> [virtual size]\n",
                 argv[0]);
    return 2;
  }
  try {
    fs::path directory = fs::absolute(argv[1]);
    int count = std::stoi(argv[2]);
    auto writer = mode == "qemu-img" ? kiln::disk::OverlayWriter::kQemuImg : kiln::disk::OverlayWriter::kNative;
    auto durability = mode == "native-unsynced" ? kiln::Durability::kCallerSyncs : kiln::Durability::kSynced;
    std::uint64_t size = argc == 5 ? std::stoull(argv[4]) : kDefaultVirtualSize;
    fs::path base = make_base(directory);
    std::vector<double> microseconds;
    for (int i = 0; i < count; ++i) {
      fs::path overlay = directory / ("overlay-" + std::to_string(i));
      auto start = Clock::now();
      kiln::disk::create_overlay(overlay, base, size, writer, durability);
      microseconds.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    for (int i = 0; i < count; ++i) fs::remove(directory / ("overlay-" + std::to_string(i)));
    fs::remove(base);
    std::printf("%s %.1f\n", argv[3], median(microseconds));
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_overlay_bench: %s\n", error.what());
    return 1;
  }
}
