#include "kiln/util/ini.h"

#include <sstream>

#include "kiln/util/error.h"
#include "kiln/util/fs.h"

namespace kiln {

namespace {

std::string trim(const std::string& text) {
  const char* space = " \t\r";
  auto first = text.find_first_not_of(space);
  if (first == std::string::npos) return "";
  auto last = text.find_last_not_of(space);
  return text.substr(first, last - first + 1);
}

[[noreturn]] void syntax_error(const std::string& path, int line, const std::string& what) {
  throw Error(ErrorCode::kConfigInvalid, path + ":" + std::to_string(line) + ": " + what);
}

}  // namespace

IniFile parse_ini_text(const std::string& text, const std::string& path_for_errors) {
  IniFile file{path_for_errors, {}};
  std::istringstream stream(text);
  std::string raw;
  std::string section;
  int line = 0;
  while (std::getline(stream, raw)) {
    ++line;
    std::string content = trim(raw);
    if (content.empty() || content[0] == '#' || content[0] == ';') continue;
    if (content[0] == '[') {
      if (content.back() != ']' || content.size() < 3) {
        syntax_error(path_for_errors, line, "malformed section header '" + content + "'");
      }
      section = trim(content.substr(1, content.size() - 2));
      continue;
    }
    auto equals = content.find('=');
    if (equals == std::string::npos) {
      syntax_error(path_for_errors, line, "expected 'key = value', got '" + content + "'");
    }
    std::string key = trim(content.substr(0, equals));
    if (key.empty()) syntax_error(path_for_errors, line, "empty key");
    if (section.empty()) {
      syntax_error(path_for_errors, line, "key '" + key + "' appears before any [section]");
    }
    file.entries.push_back({section, key, trim(content.substr(equals + 1)), line});
  }
  return file;
}

IniFile parse_ini_file(const std::filesystem::path& path) {
  return parse_ini_text(read_file(path), path.string());
}

}  // namespace kiln
