#include "backing_chain.h"

#include <sys/stat.h>

#include "kiln/image/inspector.h"
#include "kiln/util/error.h"
#include "kiln/util/layout.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

// Far deeper than any kiln chain (overlay -> base); stops a loop of backing files.
constexpr std::size_t kMaxChainDepth = 8;

bool inside(const fs::path& path, const fs::path& directory) {
  auto relative = path.lexically_normal().lexically_relative(directory.lexically_normal());
  return !relative.empty() && *relative.begin() != ".." && relative.is_relative();
}

// The refusals that matter for a layer: the overlay's own backing file is the point of it.
std::string first_refusal(const image::Inspection& inspection, bool is_overlay) {
  for (const auto& finding : inspection.refusals) {
    if (is_overlay && finding.rule == "qcow2_backing_file") continue;
    return finding.sentence;
  }
  return "";
}

}  // namespace

std::uint64_t allocated_bytes(const fs::path& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) return 0;
  return static_cast<std::uint64_t>(status.st_blocks) * 512;
}

BackingChain walk_backing_chain(const fs::path& disk, const fs::path& instances_path) {
  BackingChain chain;
  fs::path current = disk;
  while (chain.problem.empty()) {
    ChainLayer layer{current, "", 0, allocated_bytes(current), true};
    std::error_code error;
    if (!fs::is_regular_file(current, error)) {
      layer.exists = false;
      chain.layers.push_back(layer);
      chain.problem = current.string() + " is missing";
      break;
    }
    bool is_overlay = chain.layers.empty();
    try {
      image::Inspection inspection = image::inspect_file(current);
      layer.format = inspection.format;
      layer.virtual_size = inspection.virtual_size;
      chain.layers.push_back(layer);
      std::string refusal = first_refusal(inspection, is_overlay);
      if (!refusal.empty()) {
        chain.problem = current.string() + ": " + refusal;
      } else if (inspection.backing_file.empty()) {
        break;  // a standalone disk (an ISO instance's blank root) or the base
      } else if (!is_overlay) {
        chain.problem = current.string() + " is a base with a backing file of its own";
      } else if (!inside(inspection.backing_file, layout::base_directory(instances_path))) {
        chain.problem = current.string() + " is backed by " + inspection.backing_file +
                        ", outside " + layout::base_directory(instances_path).string();
      } else if (chain.layers.size() >= kMaxChainDepth) {
        chain.problem = disk.string() + " has a backing chain deeper than " + std::to_string(kMaxChainDepth);
      } else {
        current = inspection.backing_file;
      }
    } catch (const Error& failure) {
      chain.layers.push_back(layer);
      chain.problem = current.string() + ": " + failure.what();
    }
  }
  return chain;
}

}  // namespace kiln::instance
