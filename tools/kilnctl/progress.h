// Download progress for operators: a bar with bytes, rate and ETA redrawn in
// place on a terminal; plain lines (every 10 % or 5 s) when stderr is a file
// or pipe. Always on stderr, so stdout stays parseable.
#pragma once

#include "kiln/cache/image_cache.h"

namespace kilnctl {

kiln::cache::FetchProgress progress_reporter(const std::string& label);

// Ends a bar's line on a terminal; nothing otherwise.
void finish_progress();

}  // namespace kilnctl
