#include "kiln/rpc/schema_validation.h"

// Without it valijson aborts the process on a schema it cannot parse.
#define VALIJSON_USE_EXCEPTIONS 1

#include <memory>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "embedded_schemas.h"

namespace kiln::rpc {

namespace {

using Schemas = std::map<std::string, std::unique_ptr<valijson::Schema>, std::less<>>;

const Schemas& parsed_schemas() {
  static const Schemas schemas = [] {
    Schemas parsed;
    for (const auto& [name, text] : detail::embedded_schemas()) {
      auto document = nlohmann::json::parse(text);
      auto schema = std::make_unique<valijson::Schema>();
      valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
      valijson::adapters::NlohmannJsonAdapter adapter(document);
      parser.populateSchema(adapter, *schema);
      parsed.emplace(name, std::move(schema));
    }
    return parsed;
  }();
  return schemas;
}

// valijson names an unknown or missing property only in its sentence, e.g.
// "... constraints: 'gpus'." or "Missing required property 'vcpus'.".
std::optional<std::string> property_named_in(const std::string& description) {
  bool names_property = description.find("additionalProperties") != std::string::npos ||
                        description.rfind("Missing required property", 0) == 0;
  if (!names_property) return std::nullopt;
  auto last = description.rfind('\'');
  if (last == std::string::npos || last == 0) return std::nullopt;
  auto first = description.rfind('\'', last - 1);
  if (first == std::string::npos) return std::nullopt;
  return description.substr(first + 1, last - first - 1);
}

std::string escape_reference_token(const std::string& token) {
  std::string escaped;
  for (char c : token) {
    if (c == '~') escaped += "~0";
    else if (c == '/') escaped += "~1";
    else escaped += c;
  }
  return escaped;
}

}  // namespace

std::vector<std::string> schema_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : detail::embedded_schemas()) names.push_back(name);
  return names;
}

std::string json_pointer_from_context(const std::vector<std::string>& context) {
  std::string pointer;
  for (const auto& element : context) {
    if (element == "<root>") continue;
    // Every element below the root is "[name]" or "[index]"; both become a
    // reference token, as RFC 6901 does not tell array indices apart.
    std::string token = element;
    if (token.size() >= 2 && token.front() == '[' && token.back() == ']') token = token.substr(1, token.size() - 2);
    pointer += "/" + escape_reference_token(token);
  }
  return pointer;
}

nlohmann::json validate_body(std::string_view schema_name, const std::string& body) {
  const auto& schemas = parsed_schemas();
  auto schema = schemas.find(schema_name);
  if (schema == schemas.end()) {
    throw Error(ErrorCode::kInternalError, "no schema named '" + std::string(schema_name) + "'");
  }
  nlohmann::json document;
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    document = nlohmann::json::object();
  } else {
    try {
      document = nlohmann::json::parse(body);
    } catch (const nlohmann::json::parse_error& error) {
      throw ValidationError(std::string("the request body is not JSON: ") + error.what(), "");
    }
  }
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(document);
  if (validator.validate(*schema->second, target, &results)) return document;

  // valijson reports an error at every level it passed through; the deepest
  // one names the field at fault ("vcpus" rather than "flavor").
  valijson::ValidationResults::Error chosen;
  bool have_chosen = false;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) {
    if (!have_chosen || error.context.size() > chosen.context.size()) {
      chosen = error;
      have_chosen = true;
    }
  }
  auto context = chosen.context;
  if (auto property = property_named_in(chosen.description)) context.push_back("[" + *property + "]");
  std::string pointer = json_pointer_from_context(context);
  throw ValidationError("the request body does not match " + std::string(schema_name) + " at '" + pointer +
                            "': " + chosen.description,
                        pointer);
}

}  // namespace kiln::rpc
