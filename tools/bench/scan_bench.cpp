// kiln_scan_bench: the in-use scan of the image cache over many instances.
//
//   kiln_scan_bench <instances path> <instances> <runs> <qemu-img sample>
//
// Builds <instances> instance directories as provision() leaves them (a
// native overlay on one of 8 raw bases, disk.info, console.log, libvirt.xml),
// then times kiln::cache::scan_users over all of them <runs> times (median),
// and `qemu-img info -U --output=json` on the first <qemu-img sample> disks,
// one process each, scaled to <instances> — what finding the backing files
// with qemu-img would cost.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/cache/maintenance.h"
#include "kiln/disk/overlay.h"
#include "kiln/util/error.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/subprocess.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kBases = 8;

std::string uuid_for(int n) {
  char text[37];
  std::snprintf(text, sizeof text, "00000000-0000-4000-8000-%012d", n);
  return text;
}

std::string base_name(int n) { return std::string(39, 'a') + std::to_string(n); }

void build_instances(const fs::path& instances, int count) {
  namespace layout = kiln::layout;
  fs::create_directories(layout::base_directory(instances));
  for (int b = 0; b < kBases; ++b) {
    fs::path base = layout::base_path(instances, base_name(b));
    kiln::write_new_file(base, "");
    fs::resize_file(base, 64ULL << 20);
  }
  for (int i = 0; i < count; ++i) {
    fs::path directory = layout::instance_directory(instances, uuid_for(i));
    fs::path disk = layout::member(directory, layout::kRootDisk);
    fs::create_directories(directory);
    fs::path base = layout::base_path(instances, base_name(i % kBases));
    kiln::disk::create_overlay(disk, base, 20ULL << 30, kiln::disk::OverlayWriter::kNative,
                               kiln::Durability::kCallerSyncs);
    kiln::write_new_file(layout::member(directory, layout::kDiskInfo), "{\"" + disk.string() + "\": \"qcow2\"}\n");
    kiln::write_new_file(layout::member(directory, layout::kConsoleLog), "");
    kiln::write_new_file(layout::member(directory, layout::kLibvirtXml),
                         "<domain type='qemu'><name>instance-" + uuid_for(i) + "</name><devices><disk type='file' "
                         "device='disk'><driver name='qemu' type='qcow2'/><source file='" +
                             disk.string() + "'/><target dev='vda' bus='virtio'/></disk>"
                             "</devices></domain>\n");
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s <instances path> <instances> <runs> <qemu-img sample>\n", argv[0]);
    return 2;
  }
  try {
    fs::path instances = fs::absolute(argv[1]);
    int count = std::stoi(argv[2]);
    int runs = std::stoi(argv[3]);
    int sample = std::min(count, std::stoi(argv[4]));
    build_instances(instances, count);

    std::vector<double> scan_ms;
    std::size_t users = 0;
    for (int run = 0; run < runs; ++run) {
      auto start = Clock::now();
      auto found = kiln::cache::scan_users(instances);
      scan_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      users = 0;
      for (int b = 0; b < kBases; ++b) users += found.users_of(kiln::layout::base_path(instances, base_name(b))).size();
    }
    if (users != static_cast<std::size_t>(count)) {
      std::fprintf(stderr, "kiln_scan_bench: scan found %zu users, expected %d\n", users, count);
      return 1;
    }
    auto start = Clock::now();
    for (int i = 0; i < sample; ++i) {
      kiln::run_checked({{"qemu-img", "info", "-U", "--output=json", kiln::layout::member(kiln::layout::instance_directory(instances, uuid_for(i)), kiln::layout::kRootDisk).string()}});
    }
    double qemu_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count() * count / sample;
    double kiln_ms = median(scan_ms);
    std::printf("in-use scan of %d instance directories (median of %d): %.1f ms\n", count, runs, kiln_ms);
    std::printf("qemu-img info on each disk (%d measured, scaled to %d): %.1f ms\n", sample, count, qemu_ms);
    std::printf("ratio qemu-img / kiln = %.1fx\n", qemu_ms / kiln_ms);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_scan_bench: %s\n", error.what());
    return 1;
  }
}
