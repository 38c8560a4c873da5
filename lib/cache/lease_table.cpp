#include "lease_table.h"

#include <unistd.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "kiln/util/error.h"
#include "kiln/util/lock.h"

namespace kiln::cache {

namespace {

using SteadyClock = std::chrono::steady_clock;

struct Entry {
  std::thread::id owner;
  std::weak_ptr<void> hold;  // empty while the owner is still waiting for the flock
};

struct Table {
  std::mutex mutex;
  std::condition_variable released;
  std::map<std::string, Entry> entries;
};

Table& table() {
  static Table instance;
  return instance;
}

// The flock, and the table entry it stands for; gone when the last lease goes.
struct Hold {
  std::string key;
  std::optional<FileLock> lock;
  ~Hold() {
    lock.reset();  // the flock first, so a waiter that finds the entry gone can take it
    std::lock_guard guard(table().mutex);
    table().entries.erase(key);
    table().released.notify_all();
  }
};

[[noreturn]] void timed_out(const std::filesystem::path& lock_path, std::chrono::milliseconds timeout) {
  throw Error(ErrorCode::kLockFailed, "gave up waiting " + std::to_string(timeout.count() / 1000) + " s for lock " +
                                          lock_path.string() + ", held by another boot in this process (pid " +
                                          std::to_string(::getpid()) + ")");
}

}  // namespace

std::shared_ptr<void> take_base_lock(const std::filesystem::path& lock_path, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  std::string key = lock_path.lexically_normal().string();
  Table& t = table();
  std::unique_lock guard(t.mutex);
  for (;;) {
    auto it = t.entries.find(key);
    if (it == t.entries.end()) break;
    if (it->second.owner == std::this_thread::get_id()) {
      if (auto hold = it->second.hold.lock()) return hold;  // the same lease, once more
    }
    if (t.released.wait_until(guard, deadline) == std::cv_status::timeout && SteadyClock::now() >= deadline) {
      timed_out(lock_path, timeout);
    }
  }
  t.entries[key] = Entry{std::this_thread::get_id(), {}};
  guard.unlock();
  auto hold = std::make_shared<Hold>();
  hold->key = key;
  try {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    hold->lock.emplace(lock_path, std::max(left, std::chrono::milliseconds(0)));
  } catch (...) {
    hold.reset();  // erases the entry and wakes the waiters
    throw;
  }
  guard.lock();
  t.entries[key].hold = hold;
  return hold;
}

}  // namespace kiln::cache
