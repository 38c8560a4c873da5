// Hands a byte stream to several consumers, each on its own thread.
//
// The producer (the network) copies bytes into fixed-size chunks; every full
// chunk is shared, through a bounded window, by all consumers, each of which
// sees every byte in order on its own thread. So the one hash that cannot be
// avoided (Glance's os_hash, sha512) runs on a core of its own while another
// thread writes the file, and the slowest consumer sets the pace: memory stays
// at chunk_size x depth however far apart the consumers are. If a consumer
// throws, the pipeline stops (the others stop at their next chunk) and the
// exception is rethrown to the producer by the next push() that must wait, or
// by finish(); a local error (a full disk) thus ends the stream within one
// window. Not thread-safe on the producer side: one producer.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
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

  // REQUIRES: at least one consumer; depth >= 1.
  ChunkPipeline(std::vector<Consumer> consumers, std::size_t chunk_size = 1 << 20, std::size_t depth = 8);
  ChunkPipeline(Consumer consumer, std::size_t chunk_size = 1 << 20, std::size_t depth = 8);
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;
  // Stops the consumers, discarding what they have not consumed.
  ~ChunkPipeline();

  void push(std::span<const char> data);
  // Delivers every pushed byte, waits for every consumer and rethrows the first error.
  void finish();

 private:
  void enqueue_current();
  void consume(std::size_t consumer);
  void stop_consumers();

  std::vector<Consumer> consumers_;
  std::size_t chunk_size_;
  std::size_t depth_;
  std::vector<char> current_;

  std::mutex mutex_;
  std::condition_variable changed_;
  // window_[0] is chunk number first_; consumer i has consumed next_[i] - first_ of them.
  std::deque<std::vector<char>> window_;
  std::uint64_t first_ = 0;
  std::vector<std::uint64_t> next_;
  std::vector<std::vector<char>> spare_;
  bool closing_ = false;
  bool stopped_ = false;  // a consumer failed or the pipeline is being destroyed
  std::exception_ptr failure_;
  std::vector<std::thread> workers_;
};

}  // namespace kiln
