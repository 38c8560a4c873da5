#include "progress.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "context.h"

namespace kilnctl {

namespace {

using SteadyClock = std::chrono::steady_clock;

bool drew_bar = false;

std::string rate_and_eta(std::uint64_t done, std::optional<std::uint64_t> total, double seconds) {
  double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::string text = human_bytes(static_cast<std::uint64_t>(rate)) + "/s";
  if (total && rate > 0 && *total >= done) {
    text += ", ETA " + std::to_string(static_cast<long>(static_cast<double>(*total - done) / rate)) + " s";
  }
  return text;
}

}  // namespace

kiln::cache::FetchProgress progress_reporter(const std::string& label) {
  struct State {
    SteadyClock::time_point start = SteadyClock::now();
    SteadyClock::time_point last = start;
    int last_decile = -1;
  };
  auto state = std::make_shared<State>();
  bool terminal = ::isatty(STDERR_FILENO) == 1;
  return [state, terminal, label](std::uint64_t done, std::optional<std::uint64_t> total) {
    auto now = SteadyClock::now();
    double elapsed = std::chrono::duration<double>(now - state->start).count();
    int percent = total && *total > 0 ? static_cast<int>(done * 100 / *total) : -1;
    bool finished = total && done >= *total;
    if (terminal) {
      if (now - state->last < std::chrono::milliseconds(100) && !finished) return;
      state->last = now;
      int filled = percent < 0 ? 0 : percent * 30 / 100;
      std::fprintf(stderr, "\r%s [%-30s] %3d%% %s of %s, %s  ", label.c_str(),
                   std::string(static_cast<std::size_t>(filled), '#').c_str(), std::max(percent, 0),
                   human_bytes(done).c_str(), total ? human_bytes(*total).c_str() : "?",
                   rate_and_eta(done, total, elapsed).c_str());
      drew_bar = true;
      return;
    }
    int decile = percent < 0 ? -1 : percent / 10;
    if (decile == state->last_decile && now - state->last < std::chrono::seconds(5) && !finished) return;
    state->last_decile = decile;
    state->last = now;
    std::fprintf(stderr, "%s: %s of %s (%s)\n", label.c_str(), human_bytes(done).c_str(),
                 total ? human_bytes(*total).c_str() : "?", rate_and_eta(done, total, elapsed).c_str());
  };
}

void finish_progress() {
  if (drew_bar) std::fputs("\n", stderr);
  drew_bar = false;
}

}  // namespace kilnctl
