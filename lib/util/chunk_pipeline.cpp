#include "kiln/util/chunk_pipeline.h"

#include <algorithm>

namespace kiln {

ChunkPipeline::ChunkPipeline(Consumer consumer, std::size_t chunk_size, std::size_t depth)
    : consumer_(std::move(consumer)), chunk_size_(chunk_size), depth_(depth) {
  current_.reserve(chunk_size_);
  worker_ = std::thread([this] { consume(); });
}

ChunkPipeline::~ChunkPipeline() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
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
  changed_.wait(lock, [&] { return queue_.size() < depth_ || failure_; });
  if (failure_) std::rethrow_exception(failure_);
  queue_.push_back(std::move(current_));
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
  worker_.join();
  rethrow_if_failed();
}

void ChunkPipeline::rethrow_if_failed() {
  std::lock_guard lock(mutex_);
  if (failure_) std::rethrow_exception(failure_);
}

void ChunkPipeline::consume() {
  for (;;) {
    std::vector<char> chunk;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return !queue_.empty() || closing_; });
      if (queue_.empty()) return;  // closing and drained
      chunk = std::move(queue_.front());
      queue_.pop_front();
    }
    changed_.notify_all();
    try {
      consumer_(chunk);
    } catch (...) {
      std::lock_guard lock(mutex_);
      failure_ = std::current_exception();
      queue_.clear();
      changed_.notify_all();
      return;
    }
    std::lock_guard lock(mutex_);
    if (spare_.size() < depth_) spare_.push_back(std::move(chunk));
  }
}

}  // namespace kiln
