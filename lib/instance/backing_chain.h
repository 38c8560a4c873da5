// Walking a disk's backing chain natively, as `qemu-img info --backing-chain`
// would, for show_instance and recover_instance.
//
// Every layer is read with the native inspector (bounded reads, no fork).
// The chain of a kiln disk is whole and safe when: every layer exists; the
// instance's own file is qcow2 whose only refusal is having a backing file;
// that backing file is an absolute path inside <instances_path>/_base; and
// the base is a raw (or ISO) file the inspector has nothing against.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "kiln/instance/inventory.h"

namespace kiln::instance {

struct BackingChain {
  std::vector<ChainLayer> layers;  // layers[0] is the disk itself
  std::string problem;             // "" when whole and safe
};

BackingChain walk_backing_chain(const std::filesystem::path& disk, const std::filesystem::path& instances_path);

// Allocated bytes of a file (st_blocks * 512); 0 when it is gone.
std::uint64_t allocated_bytes(const std::filesystem::path& path);

}  // namespace kiln::instance
