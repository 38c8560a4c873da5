#include "kiln/util/failpoint.h"

#if defined(KILN_FAILPOINTS) && KILN_FAILPOINTS

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace kiln::failpoint {

namespace {

struct Arming {
  std::string name;
  long count = 1;
};

const Arming& arming() {
  // Read once: the environment may change later (setenv in tests) but the
  // arming of a process is what it started with.
  static const Arming parsed = [] {
    Arming result;
    const char* value = std::getenv("KILN_FAILPOINT");
    if (value == nullptr) return result;
    std::string text = value;
    auto colon = text.rfind(':');
    if (colon != std::string::npos) {
      char* end = nullptr;
      long count = std::strtol(text.c_str() + colon + 1, &end, 10);
      if (end != nullptr && *end == '\0' && count > 0) {
        result.count = count;
        text.resize(colon);
      }
    }
    result.name = text;
    return result;
  }();
  return parsed;
}

std::atomic<long> passages{0};

}  // namespace

const char* armed() noexcept { return arming().name.c_str(); }

void reached(const char* name) noexcept {
  const Arming& armed_point = arming();
  if (armed_point.name.empty() || std::strcmp(name, armed_point.name.c_str()) != 0) return;
  if (passages.fetch_add(1) + 1 < armed_point.count) return;
  // write(2), not iostreams: nothing buffered may be lost or flushed twice.
  std::string line = "kiln failpoint " + armed_point.name + " reached\n";
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached: SIGKILL cannot be caught
}

}  // namespace kiln::failpoint

#endif
