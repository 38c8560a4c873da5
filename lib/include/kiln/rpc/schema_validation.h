// Request bodies checked against the JSON Schemas (draft-07) in schemas/
// before anything runs.
//
// The schemas are compiled into libkiln at build time, so an installed kilnd
// does not depend on the source tree. A refused body names the RFC 6901
// pointer of the offending field: valijson reports where it failed as a
// context such as {"<root>", "[flavor]", "[vcpus]"}, which becomes
// "/flavor/vcpus"; for an unknown or missing property the pointer names that
// property itself. Thread-safe: the parsed schemas are immutable after the
// first use.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/util/error.h"

namespace kiln::rpc {

// A body refused by its schema (or not JSON at all).
class ValidationError : public Error {
 public:
  ValidationError(const std::string& message, std::string pointer)
      : Error(ErrorCode::kInvalidArgument, message), pointer_(std::move(pointer)) {}
  const std::string& pointer() const { return pointer_; }

 private:
  std::string pointer_;
};

// The names of the embedded schemas, e.g. "boot-request" for
// schemas/boot-request.schema.json.
std::vector<std::string> schema_names();

// Parses `body` as JSON and validates it against schema `schema_name`.
// An empty body counts as `{}`. Throws ValidationError (pointer "" when the
// body is not JSON); throws kInternalError for an unknown schema name.
nlohmann::json validate_body(std::string_view schema_name, const std::string& body);

// {"<root>", "[flavor]", "[a/b]"} -> "/flavor/a~1b" ("~" -> "~0", "/" -> "~1").
std::string json_pointer_from_context(const std::vector<std::string>& context);

}  // namespace kiln::rpc
