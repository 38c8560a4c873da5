#include "kiln/rpc/metrics.h"

#include <sstream>

namespace kiln::rpc {

void Metrics::count_http_request(unsigned status) {
  std::lock_guard lock(mutex_);
  ++http_requests_[status];
}

void Metrics::count_boot() { ++boots_; }

void Metrics::count_failure(std::string_view code) {
  std::lock_guard lock(mutex_);
  auto it = failures_.find(code);
  if (it == failures_.end()) it = failures_.emplace(std::string(code), 0).first;
  ++it->second;
}

void Metrics::add_downloaded_bytes(std::uint64_t bytes) { downloaded_bytes_ += bytes; }

void Metrics::operation_started() { ++running_; }

void Metrics::operation_finished(std::string_view kind, double seconds) {
  --running_;
  std::lock_guard lock(mutex_);
  auto it = durations_.find(kind);
  if (it == durations_.end()) it = durations_.emplace(std::string(kind), Histogram{}).first;
  Histogram& histogram = it->second;
  for (std::size_t i = 0; i < kDurationBuckets.size(); ++i) {
    if (seconds <= kDurationBuckets[i]) {
      ++histogram.buckets[i];
      break;
    }
  }
  histogram.sum += seconds;
  ++histogram.count;
}

void Metrics::set_operations_retained(std::size_t count) { retained_ = count; }

void Metrics::count_operation_forgotten() { ++forgotten_; }

std::string Metrics::exposition(std::uint64_t cache_bytes, std::size_t cache_entries) const {
  std::ostringstream out;
  out << "# HELP kiln_boots_total Boot operations that succeeded.\n"
      << "# TYPE kiln_boots_total counter\n"
      << "kiln_boots_total " << boots_.load() << "\n"
      << "# HELP kiln_downloaded_bytes_total Bytes downloaded from Glance into the image cache.\n"
      << "# TYPE kiln_downloaded_bytes_total counter\n"
      << "kiln_downloaded_bytes_total " << downloaded_bytes_.load() << "\n"
      << "# HELP kiln_cache_bytes Bytes the image cache's bases occupy on disk.\n"
      << "# TYPE kiln_cache_bytes gauge\n"
      << "kiln_cache_bytes " << cache_bytes << "\n"
      << "# HELP kiln_cache_entries Bases in the image cache.\n"
      << "# TYPE kiln_cache_entries gauge\n"
      << "kiln_cache_entries " << cache_entries << "\n"
      << "# HELP kiln_operations_running Operations running now.\n"
      << "# TYPE kiln_operations_running gauge\n"
      << "kiln_operations_running " << running_.load() << "\n"
      << "# HELP kiln_operations_retained Operations remembered now (memory and operations.log).\n"
      << "# TYPE kiln_operations_retained gauge\n"
      << "kiln_operations_retained " << retained_.load() << "\n"
      << "# HELP kiln_operations_forgotten_total Finished operations forgotten to stay within max_retained_operations.\n"
      << "# TYPE kiln_operations_forgotten_total counter\n"
      << "kiln_operations_forgotten_total " << forgotten_.load() << "\n";
  std::lock_guard lock(mutex_);
  out << "# HELP kiln_operation_failures_total Operations that failed, by error code.\n"
      << "# TYPE kiln_operation_failures_total counter\n";
  for (const auto& [code, count] : failures_) out << "kiln_operation_failures_total{code=\"" << code << "\"} " << count << "\n";
  out << "# HELP kiln_http_requests_total HTTP requests answered, by status.\n"
      << "# TYPE kiln_http_requests_total counter\n";
  for (const auto& [status, count] : http_requests_) {
    out << "kiln_http_requests_total{status=\"" << status << "\"} " << count << "\n";
  }
  out << "# HELP kiln_operation_duration_seconds Time from an operation's start to its end, by kind.\n"
      << "# TYPE kiln_operation_duration_seconds histogram\n";
  for (const auto& [kind, histogram] : durations_) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kDurationBuckets.size(); ++i) {
      cumulative += histogram.buckets[i];
      out << "kiln_operation_duration_seconds_bucket{kind=\"" << kind << "\",le=\"" << kDurationBuckets[i] << "\"} "
          << cumulative << "\n";
    }
    out << "kiln_operation_duration_seconds_bucket{kind=\"" << kind << "\",le=\"+Inf\"} " << histogram.count << "\n"
        << "kiln_operation_duration_seconds_sum{kind=\"" << kind << "\"} " << histogram.sum << "\n"
        << "kiln_operation_duration_seconds_count{kind=\"" << kind << "\"} " << histogram.count << "\n";
  }
  return out.str();
}

}  // namespace kiln::rpc
