// kiln_boot_bench: warm-boot latency, from provision() to the domain defined.
//
//   kiln_boot_bench <glance url> <image id> <instances path> <boots> <libvirt uri> [record ttl seconds]
//
// Boots the image once to fill the cache, then <boots> more instances of it
// (not started) one after another, each timed from the call to its return,
// and deletes each afterwards (not timed). To tell Glance's share from
// kiln's, it also times the image-record lookup alone, as many times. With a
// record TTL (CachePolicy::image_record_ttl) the lookups after the first are
// answered from memory.
// Prints p50 and p99 in milliseconds of both.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kiln/cache/image_cache.h"
#include "kiln/glance/client.h"
#include "kiln/instance/provision.h"
#include "kiln/util/error.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1) + 0.5);
  return values[index];
}

std::string uuid_for(int n) {
  char text[37];
  std::snprintf(text, sizeof text, "00000000-0000-4000-8000-%012d", n);
  return text;
}

double milliseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void print(const char* what, const std::vector<double>& values) {
  std::printf("%-28s p50 %7.2f ms   p99 %7.2f ms   (%zu runs)\n", what, percentile(values, 0.5),
              percentile(values, 0.99), values.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    std::fprintf(stderr, "usage: %s <glance url> <image id> <instances path> <boots> <libvirt uri> [record ttl]\n",
                 argv[0]);
    return 2;
  }
  try {
    kiln::glance::GlanceClient glance({kiln::http::parse_url(argv[1])});
    fs::path instances = fs::absolute(argv[3]);
    kiln::cache::CachePolicy policy;
    policy.image_record_ttl = std::chrono::seconds(argc == 7 ? std::stoi(argv[6]) : 0);
    kiln::cache::ImageCache cache(instances, glance, policy);
    kiln::virt::Connection libvirt(argv[5]);
    kiln::instance::Host host{instances, cache, libvirt, ""};  // domain type from capabilities, as in production
    kiln::instance::BootRequest request;
    request.image_id = argv[2];
    request.root_gb = 1;
    request.swap_mb = 16;
    request.memory_mb = 128;
    request.start = false;
    int boots = std::stoi(argv[4]);

    request.uuid = uuid_for(0);
    kiln::instance::provision(request, host);  // fills the cache: not a warm boot
    kiln::instance::delete_instance(request.uuid, instances, libvirt);

    std::vector<double> boot_ms;
    std::vector<double> lookup_ms;
    for (int i = 1; i <= boots; ++i) {
      request.uuid = uuid_for(i);
      auto start = Clock::now();
      kiln::instance::provision(request, host);
      boot_ms.push_back(milliseconds_since(start));
      kiln::instance::delete_instance(request.uuid, instances, libvirt);
      start = Clock::now();
      cache.lookup(request.image_id);
      lookup_ms.push_back(milliseconds_since(start));
    }
    print("warm boot (to defined)", boot_ms);
    print("  of which Glance lookup", lookup_ms);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kiln_boot_bench: %s\n", error.what());
    return 1;
  }
}
