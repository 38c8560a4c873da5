#include "failpoints.h"

#include <regex>

#include "kiln/util/fs.h"

namespace kiln::test {

std::set<std::string> failpoints_in_sources(const std::filesystem::path& source_dir) {
  std::set<std::string> found;
  std::regex pattern("KILN_FAILPOINT\\(\"([^\"]+)\"\\)");
  for (const char* part : {"lib", "agent", "tools"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(source_dir / part)) {
      std::string extension = entry.path().extension().string();
      if (extension != ".cpp" && extension != ".h") continue;
      std::string text = read_file(entry.path());
      for (std::sregex_iterator it(text.begin(), text.end(), pattern), end; it != end; ++it) found.insert((*it)[1]);
    }
  }
  return found;
}

}  // namespace kiln::test
