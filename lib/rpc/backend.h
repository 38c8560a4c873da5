// The lib/ objects one generation of settings builds: the Glance client and
// the image cache, created on first use (a Keystone login or a bad Glance
// setting only matters to operations that need Glance). A reload makes a new
// Backend; operations keep the one they started with. Thread-safe.
#pragma once

#include <memory>
#include <mutex>

#include "kiln/cache/image_cache.h"
#include "kiln/config/settings.h"
#include "kiln/glance/client.h"

namespace kiln::rpc {

class Backend {
 public:
  explicit Backend(config::Settings settings) : settings_(std::move(settings)) {}

  const config::Settings& settings() const { return settings_; }
  // Throws what building a GlanceClient throws (Keystone errors, no endpoint).
  const cache::ImageCache& cache() const;

 private:
  config::Settings settings_;
  mutable std::mutex mutex_;
  mutable std::unique_ptr<glance::GlanceClient> glance_;
  mutable std::unique_ptr<cache::ImageCache> cache_;
};

}  // namespace kiln::rpc
