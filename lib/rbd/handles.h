// Internal to lib/rbd: librados/librbd results as kiln::Error, and an open
// image as an RAII handle. Every librbd call in lib/rbd goes through these,
// so a failure reads the same wherever it happens.
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "kiln/rbd/cluster.h"
#include "kiln/util/error.h"

namespace kiln::rbd {

[[noreturn]] inline void fail(const std::string& what, int result) {
  throw Error(ErrorCode::kRbdError, what + ": " + std::strerror(-result));
}

// ENOENT on an image is the caller's "no such image", not Ceph failing.
[[noreturn]] inline void fail_image(const std::string& what, const std::string& spec, int result) {
  if (result == -ENOENT) throw Error(ErrorCode::kNotFound, "RBD image " + spec + " does not exist");
  fail(what + " " + spec, result);
}

// An open image, closed on every path.
class OpenImage {
 public:
  // `snapshot` nullptr = the image head. Read-only opens need no write caps
  // (client.kiln may only read Glance's pool) and take no exclusive lock.
  OpenImage(rados_ioctx_t io, const std::string& pool, const std::string& name, bool read_only,
            const char* snapshot = nullptr) {
    int result = read_only ? rbd_open_read_only(io, name.c_str(), &image_, snapshot)
                           : rbd_open(io, name.c_str(), &image_, snapshot);
    if (result < 0) fail_image("open RBD image", pool + "/" + name, result);
  }
  OpenImage(const OpenImage&) = delete;
  OpenImage& operator=(const OpenImage&) = delete;
  ~OpenImage() { rbd_close(image_); }
  rbd_image_t get() const { return image_; }

 private:
  rbd_image_t image_ = nullptr;
};

inline std::uint64_t image_size(const OpenImage& image, const std::string& spec) {
  std::uint64_t size = 0;
  int result = rbd_get_size(image.get(), &size);
  if (result < 0) fail("size of RBD image " + spec, result);
  return size;
}

// The snapshot `image` was cloned from; nullopt for an image that is not a
// clone (or was flattened).
inline std::optional<Parent> image_parent(const OpenImage& image, const std::string& spec) {
  rbd_linked_image_spec_t parent_image{};
  rbd_snap_spec_t parent_snap{};
  int result = rbd_get_parent(image.get(), &parent_image, &parent_snap);
  if (result == -ENOENT) return std::nullopt;
  if (result < 0) fail("parent of RBD image " + spec, result);
  Parent parent{parent_image.pool_name ? parent_image.pool_name : "",
                parent_image.image_name ? parent_image.image_name : "", parent_snap.name ? parent_snap.name : ""};
  rbd_linked_image_spec_cleanup(&parent_image);
  rbd_snap_spec_cleanup(&parent_snap);
  return parent;
}

}  // namespace kiln::rbd
