#include "kiln/util/chunk_pipeline.h"

#include <algorithm>

namespace kiln {

ChunkPipeline::ChunkPipeline(std::vector<Consumer> consumers, std::size_t chunk_size, std::size_t depth)
    : consumers_(std::move(consumers)), chunk_size_(chunk_size), depth_(std::max<std::size_t>(depth, 1)) {
  current_.reserve(chunk_size_);
  next_.assign(consumers_.size(), 0);
  workers_.reserve(consumers_.size());
  try {
    for (std::size_t i = 0; i < consumers_.size(); ++i) workers_.emplace_back([this, i] { consume(i); });
  } catch (...) {
    stop_consumers();
    throw;
  }
}

ChunkPipeline::ChunkPipeline(Consumer consumer, std::size_t chunk_size, std::size_t depth)
    : ChunkPipeline(std::vector<Consumer>{std::move(consumer)}, chunk_size, depth) {}

ChunkPipeline::~ChunkPipeline() { stop_consumers(); }

void ChunkPipeline::stop_consumers() {
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

void ChunkPipeline::push(std::span<const char> data) {
  while (!data.empty()) {
    std::size_t take = std::min(data.size(), chunk_size_ - current_.size());
    current_.insert(current_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
    data = data.subspan(take);
    if (current_.size() == chunk_size_) enqueue_current();
  }
}

void ChunkPipeline::enqueue_current() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return window_.size() < depth_ || failure_; });
  if (failure_) std::rethrow_exception(failure_);
  window_.push_back(std::move(current_));
  if (!spare_.empty()) {
    current_ = std::move(spare_.back());
    spare_.pop_back();
  } else {
    current_ = {};
  }
  current_.clear();
  current_.reserve(chunk_size_);
  lock.unlock();
  changed_.notify_all();
}

void ChunkPipeline::finish() {
  if (!current_.empty()) enqueue_current();
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
  for (auto& worker : workers_) worker.join();
  std::lock_guard lock(mutex_);
  if (failure_) std::rethrow_exception(failure_);
}

void ChunkPipeline::consume(std::size_t consumer) {
  for (;;) {
    const std::vector<char>* chunk = nullptr;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopped_ || next_[consumer] < first_ + window_.size() || closing_; });
      if (stopped_) return;
      if (next_[consumer] == first_ + window_.size()) return;  // closing and drained
      // A deque keeps its elements in place while others are pushed at the
      // back, and this one is not popped before this consumer is done with it.
      chunk = &window_[next_[consumer] - first_];
    }
    try {
      consumers_[consumer](*chunk);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!failure_) failure_ = std::current_exception();
      stopped_ = true;
      changed_.notify_all();
      return;
    }
    bool freed = false;
    {
      std::lock_guard lock(mutex_);
      ++next_[consumer];
      // The oldest chunk goes back to the producer once every consumer is past it.
      while (!window_.empty() && *std::min_element(next_.begin(), next_.end()) > first_) {
        if (spare_.size() < depth_) spare_.push_back(std::move(window_.front()));
        window_.pop_front();
        ++first_;
        freed = true;
      }
    }
    if (freed) changed_.notify_all();
  }
}

}  // namespace kiln
