#include "cluster_pipeline.h"

#include <algorithm>

namespace kiln::image {

namespace {

// About 8 MiB of decompressed clusters in flight (and at most as much of
// their input), at least two per worker so that none waits for the feeder.
std::size_t depth_for(unsigned cluster_bits, unsigned workers) {
  std::size_t by_memory = (std::size_t{8} << 20) >> cluster_bits;
  return std::clamp<std::size_t>(by_memory, 2 * std::size_t{workers}, 128);
}

}  // namespace

ClusterPipeline::ClusterPipeline(ClusterDecompressor::Type type, unsigned cluster_bits, unsigned workers, Ready ready)
    : type_(type), cluster_bits_(cluster_bits), depth_(depth_for(cluster_bits, workers)), ready_(std::move(ready)) {
  workers_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) workers_.emplace_back([this] { work(); });
}

ClusterPipeline::~ClusterPipeline() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ClusterPipeline::work() {
  ClusterDecompressor decompressor(type_, cluster_bits_);
  std::unique_lock lock(mutex_);
  for (;;) {
    Job* job = nullptr;
    queued_.wait(lock, [&] {
      if (stopping_) return true;
      auto it = std::find_if(jobs_.begin(), jobs_.end(),
                             [](const auto& j) { return j->state == Job::State::kQueued; });
      if (it != jobs_.end()) job = it->get();
      return job != nullptr;
    });
    if (stopping_) return;
    job->state = Job::State::kRunning;
    lock.unlock();
    // The job stays in jobs_ (only the feeder removes jobs, and only
    // finished ones), so it lives while this runs.
    job->output.resize(std::size_t{1} << cluster_bits_);
    bool ok = decompressor.decompress(job->input, job->output);
    lock.lock();
    job->state = ok ? Job::State::kDone : Job::State::kFailed;
    finished_.notify_all();
  }
}

void ClusterPipeline::hand_over(std::size_t wait_for) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (cancelled_) return;
    while (!jobs_.empty() && (jobs_.front()->state == Job::State::kDone ||
                              jobs_.front()->state == Job::State::kFailed)) {
      std::unique_ptr<Job> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      ready_(job->guest, job->output, job->state == Job::State::kDone);
      lock.lock();
      if (cancelled_) return;
    }
    if (jobs_.size() <= wait_for) return;
    finished_.wait(lock);
  }
}

void ClusterPipeline::submit(std::uint64_t guest, std::span<const char> compressed) {
  hand_over(depth_ - 1);
  std::lock_guard lock(mutex_);
  if (cancelled_) return;
  jobs_.push_back(std::make_unique<Job>(
      Job{guest, std::vector<char>(compressed.begin(), compressed.end()), {}, Job::State::kQueued}));
  queued_.notify_one();
}

void ClusterPipeline::pass(std::uint64_t guest, std::span<const char> bytes) {
  hand_over(depth_ - 1);
  std::unique_lock lock(mutex_);
  if (cancelled_) return;
  if (jobs_.empty()) {
    lock.unlock();
    ready_(guest, bytes, true);
    return;
  }
  jobs_.push_back(std::make_unique<Job>(
      Job{guest, {}, std::vector<char>(bytes.begin(), bytes.end()), Job::State::kDone}));
}

void ClusterPipeline::drain() { hand_over(0); }

void ClusterPipeline::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  // Running jobs finish and are dropped with the pipeline.
  std::erase_if(jobs_, [](const auto& job) { return job->state == Job::State::kQueued; });
}

}  // namespace kiln::image
