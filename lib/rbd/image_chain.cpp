#include "kiln/rbd/image_chain.h"

#include <rbd/librbd.h>

#include "handles.h"

namespace kiln::rbd {

namespace {

// Ceph keeps clone chains short (rbd_default_clone_format's depth is the
// operator's choice, but a chain of more than a few layers is a mistake);
// the bound only keeps a corrupt parent link from looping.
constexpr int kMaxDepth = 16;

int add_used(std::uint64_t /*offset*/, std::size_t length, int exists, void* total) {
  if (exists) *static_cast<std::uint64_t*>(total) += length;
  return 0;
}

// As `rbd du`: whole objects, the parent's left out, from the image's
// creation to the open snapshot (or head).
std::uint64_t used_bytes(const OpenImage& image, std::uint64_t size, const std::string& spec) {
  std::uint64_t total = 0;
  int result = rbd_diff_iterate2(image.get(), nullptr, 0, size, 0, 1, add_used, &total);
  if (result < 0) fail("used bytes of RBD image " + spec, result);
  return total;
}

// One layer, read from the open image; returns its parent.
std::optional<Parent> read_layer(const OpenImage& image, ChainLayer& layer) {
  std::string spec = layer.spec();
  layer.virtual_size = image_size(image, spec);
  layer.used_bytes = used_bytes(image, layer.virtual_size, spec);
  return image_parent(image, spec);
}

}  // namespace

std::uint64_t stored_bytes(const Pool& pool, const std::string& image, const std::string& snapshot) {
  OpenImage open(pool.handle(), pool.name(), image, true, snapshot.empty() ? nullptr : snapshot.c_str());
  std::string spec = pool.name() + "/" + image + (snapshot.empty() ? "" : "@" + snapshot);
  return used_bytes(open, image_size(open, spec), spec);
}

std::vector<ChainLayer> image_chain(const Cluster& cluster, const Pool& pool, const std::string& image) {
  std::vector<ChainLayer> chain{ChainLayer{pool.name(), image, "", 0, std::nullopt, ""}};
  std::optional<Parent> parent;
  {
    OpenImage head(pool.handle(), pool.name(), image, true);
    parent = read_layer(head, chain.back());
  }
  while (parent && chain.size() < kMaxDepth) {
    chain.push_back(ChainLayer{parent->pool, parent->image, parent->snapshot, 0, std::nullopt, ""});
    try {
      Pool parent_pool = cluster.open_pool(parent->pool);
      OpenImage open(parent_pool.handle(), parent_pool.name(), parent->image, true, parent->snapshot.c_str());
      parent = read_layer(open, chain.back());
    } catch (const Error& error) {
      chain.back().unreadable = error.what();
      break;
    }
  }
  return chain;
}

}  // namespace kiln::rbd
