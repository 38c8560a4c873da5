// disk.info: the pinned format of each of an instance's disks.
//
// A one-line JSON object mapping absolute disk paths to formats ("qcow2"),
// as Nova writes it; an RBD disk is "rbd:<pool>/<image>": "raw". It exists so that a guest writing a qcow2 header into a
// raw disk can never change how the host opens that disk (CVE-2014-0134):
// an entry, once written, never changes format. Saved atomically.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "kiln/util/fs.h"

namespace kiln::disk {

class DiskInfo {
 public:
  // Reads `file`; an absent file is an empty DiskInfo. Throws kiln::Error
  // kIoError when the file exists but is not a JSON object of strings.
  static DiskInfo load(const std::filesystem::path& file);

  // Records `format` for `disk`. Throws kiln::Error kInvalidArgument if the
  // disk is already recorded with another format, or the path is not absolute.
  void add(const std::filesystem::path& disk, const std::string& format);
  // Records an RBD image as "rbd:<pool>/<image>" (QEMU's spelling of it),
  // always raw: RBD clones are raw images. Throws as add().
  void add_rbd(const std::string& pool, const std::string& image);

  // One line of JSON with a trailing newline.
  std::string to_json() const;
  // Replaces `file` atomically (kSynced), or creates it, which must not
  // exist, for a caller that syncs it (kCallerSyncs).
  void save(const std::filesystem::path& file, Durability durability = Durability::kSynced) const;

  const std::map<std::string, std::string>& entries() const { return entries_; }

 private:
  std::map<std::string, std::string> entries_;
};

}  // namespace kiln::disk
