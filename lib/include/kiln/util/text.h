// Text from outside (Glance image names and properties, request names) made
// safe to check and to print.
//
// is_utf8 says whether bytes are well-formed UTF-8 (what JSON and libvirt's
// XML need). printable returns text a terminal shows as it is written: every
// C0 and C1 control character, DEL and backslash is escaped (\n, \t, \r, \e,
// \\, \xNN, \u{NNNN} for C1), and each byte of invalid UTF-8 becomes \xNN, so
// a name can neither forge an output line nor send escape sequences.
#pragma once

#include <string>
#include <string_view>

namespace kiln {

bool is_utf8(std::string_view text);

std::string printable(std::string_view text);

}  // namespace kiln
