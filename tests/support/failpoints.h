// The failpoints kiln's sources name: what a crash matrix must cover.
#pragma once

#include <filesystem>
#include <set>
#include <string>

namespace kiln::test {

// Every KILN_FAILPOINT("...") name in `source_dir`'s lib/, agent/ and tools/.
std::set<std::string> failpoints_in_sources(const std::filesystem::path& source_dir);

}  // namespace kiln::test
