// UUID checks for instance ids.
//
// An instance uuid names a directory under instances_path, so it is the one
// piece of a request that becomes a path: only the canonical 8-4-4-4-12 hex
// form is accepted, which can never contain '/' or '..'.
#pragma once

#include <string>
#include <string_view>

namespace kiln {

bool is_canonical_uuid(std::string_view text);

// The lowercase canonical form of `text`. Throws kiln::Error kInvalidUuid
// naming the offending text when it is not a UUID.
std::string normalize_uuid(std::string_view text);

}  // namespace kiln
