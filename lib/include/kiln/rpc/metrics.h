// kilnd's counters, exposed on GET /metrics in the Prometheus text format
// (version 0.0.4). Every name starts with kiln_.
//
// Thread-safe: operations, the HTTP server and the scrape update and read it
// concurrently.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace kiln::rpc {

// Bucket bounds of kiln_operation_duration_seconds (a boot that downloads may
// take minutes; one that finds its base cached takes milliseconds).
inline constexpr std::array<double, 12> kDurationBuckets = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120, 600};

class Metrics {
 public:
  void count_http_request(unsigned status);
  void count_boot();  // a boot operation succeeded
  void count_failure(std::string_view code);
  void add_downloaded_bytes(std::uint64_t bytes);
  void operation_started();
  // `kind` is boot, delete or precache.
  void operation_finished(std::string_view kind, double seconds);
  // Operations remembered now (GET answers them), and forgotten by retention.
  void set_operations_retained(std::size_t count);
  void count_operation_forgotten();

  // The whole exposition; the cache figures are measured by the caller.
  std::string exposition(std::uint64_t cache_bytes, std::size_t cache_entries) const;

 private:
  struct Histogram {
    std::array<std::uint64_t, kDurationBuckets.size()> buckets{};  // cumulative on output
    double sum = 0;
    std::uint64_t count = 0;
  };
  mutable std::mutex mutex_;
  std::map<unsigned, std::uint64_t> http_requests_;
  std::map<std::string, std::uint64_t, std::less<>> failures_;
  std::map<std::string, Histogram, std::less<>> durations_;
  std::atomic<std::uint64_t> boots_{0};
  std::atomic<std::uint64_t> downloaded_bytes_{0};
  std::atomic<std::int64_t> running_{0};
  std::atomic<std::uint64_t> retained_{0};
  std::atomic<std::uint64_t> forgotten_{0};
};

}  // namespace kiln::rpc
