#include "kiln/util/uuid.h"

#include <cctype>

#include "kiln/util/error.h"

namespace kiln {

bool is_canonical_uuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position ? text[i] != '-' : !std::isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

std::string normalize_uuid(std::string_view text) {
  if (!is_canonical_uuid(text)) {
    throw Error(ErrorCode::kInvalidUuid,
                "'" + std::string(text) + "' is not a UUID (expected 8-4-4-4-12 hex digits)");
  }
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

}  // namespace kiln
