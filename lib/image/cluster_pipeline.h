// Decompresses a qcow2 stream's compressed clusters on worker threads while
// the stream goes on, and hands every cluster back to the feeder in the
// order it was submitted, so that the feeder writes (and digests) the output
// in the same order as without the workers. A cluster that needs no work (an
// uncompressed one arriving while compressed ones are still pending) goes
// through it too, to keep that order.
//
// Bounded: at most depth() clusters are in it (their input and output both
// held), so its memory is about 2 * depth() clusters; submit() waits for the
// oldest when it is full. Each worker has its own ClusterDecompressor, which
// bounds what one cluster can cost (kiln/image/cluster_decompressor.h).
// Workers only read their job's input and write their job's output; the
// feeder alone writes the file.
//
// Private to lib/image (Qcow2Stream). One feeder thread calls every method;
// the destructor stops and joins the workers (a running job finishes first).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "cluster_decompressor.h"

namespace kiln::image {

class ClusterPipeline {
 public:
  // `ok` false: the cluster did not decompress to exactly one cluster.
  using Ready = std::function<void(std::uint64_t guest, std::span<const char> cluster, bool ok)>;

  // REQUIRES: 9 <= cluster_bits <= 21, workers >= 1. `ready` is called on
  // the feeder's thread, from submit(), pass() and drain().
  ClusterPipeline(ClusterDecompressor::Type type, unsigned cluster_bits, unsigned workers, Ready ready);
  ~ClusterPipeline();
  ClusterPipeline(const ClusterPipeline&) = delete;
  ClusterPipeline& operator=(const ClusterPipeline&) = delete;

  // A compressed cluster for guest offset `guest`.
  void submit(std::uint64_t guest, std::span<const char> compressed);
  // Bytes that need no work, for guest offset `guest`: handed over at once
  // when nothing is pending, else after what was submitted before them.
  void pass(std::uint64_t guest, std::span<const char> bytes);
  // Waits for every cluster in it and hands them over.
  void drain();
  // Drops what is queued and hands nothing over any more (the stream failed).
  void cancel();

  std::size_t depth() const { return depth_; }

 private:
  struct Job {
    enum class State { kQueued, kRunning, kDone, kFailed };
    std::uint64_t guest;
    std::vector<char> input;
    std::vector<char> output;
    State state;
  };

  void work();
  // Hands over the finished jobs at the front; with `wait_for` n, waits
  // until at most n jobs are left.
  void hand_over(std::size_t wait_for);

  const ClusterDecompressor::Type type_;
  const unsigned cluster_bits_;
  const std::size_t depth_;
  Ready ready_;
  std::mutex mutex_;
  std::condition_variable queued_;    // a job was queued, or stopping_
  std::condition_variable finished_;  // a job finished
  std::deque<std::unique_ptr<Job>> jobs_;  // in submission order
  bool stopping_ = false;
  bool cancelled_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kiln::image
