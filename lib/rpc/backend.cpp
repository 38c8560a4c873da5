#include "backend.h"

#include "kiln/config/glance_client.h"

namespace kiln::rpc {

// The Glance client is kilnctl's (kiln/config/glance_client.h).
const cache::ImageCache& Backend::cache() const {
  std::lock_guard lock(mutex_);
  if (cache_) return *cache_;
  glance_ = config::make_glance_client(settings_);
  cache_ = std::make_unique<cache::ImageCache>(settings_.instances_path, *glance_, settings_.cache);
  return *cache_;
}

}  // namespace kiln::rpc
