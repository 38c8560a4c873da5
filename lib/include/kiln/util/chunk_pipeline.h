// Hands a byte stream to a consumer running on its own thread.
//
// The producer (the network) copies bytes into fixed-size chunks; full chunks
// go through a bounded queue to one consumer thread (hashing and writing), so
// receiving, hashing and writing overlap on different cores while memory stays
// at chunk_size x depth. Bytes reach the consumer in order. If the consumer
// throws, the pipeline stops and the exception is rethrown to the producer by
// the next push() or finish(). Not thread-safe on the producer side: one
// producer.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace kiln {

class ChunkPipeline {
 public:
  using Consumer = std::function<void(std::span<const char>)>;

  ChunkPipeline(Consumer consumer, std::size_t chunk_size = 1 << 20, std::size_t depth = 8);
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;
  // Stops the consumer, discarding what it has not consumed.
  ~ChunkPipeline();

  void push(std::span<const char> data);
  // Delivers every pushed byte, waits for the consumer and rethrows its error.
  void finish();

 private:
  void enqueue_current();
  void consume();
  void rethrow_if_failed();

  Consumer consumer_;
  std::size_t chunk_size_;
  std::size_t depth_;
  std::vector<char> current_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<char>> queue_;
  std::vector<std::vector<char>> spare_;
  bool closing_ = false;
  std::exception_ptr failure_;
  std::thread worker_;
};

}  // namespace kiln
