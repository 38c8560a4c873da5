// A reader for nova.conf-style INI files.
//
// Syntax (oslo.config's subset kiln accepts): `[section]` headers, `key = value`
// lines, full-line comments starting with '#' or ';', blank lines. There are no
// inline comments: as in oslo.config, text after '#' on a value line is part of
// the value. Keys outside any section are an error. Every entry keeps its line
// number so that callers can reject unknown keys and bad values by file:line.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace kiln {

struct IniEntry {
  std::string section;  // as written, e.g. "DEFAULT", "glance"
  std::string key;
  std::string value;    // surrounding whitespace trimmed
  int line = 0;
};

struct IniFile {
  std::string path;
  std::vector<IniEntry> entries;  // in file order
};

// Throws kiln::Error kConfigInvalid ("<file>:<line>: ...") on a syntax error,
// kIoError if the file cannot be read.
IniFile parse_ini_file(const std::filesystem::path& path);
IniFile parse_ini_text(const std::string& text, const std::string& path_for_errors);

}  // namespace kiln
