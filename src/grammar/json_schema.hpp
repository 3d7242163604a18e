// Structured output: a JSON Schema (or "any JSON object", OpenAI's response_format json_object)
// compiled once into an immutable grammar that per-sequence matchers (token_matcher.hpp) walk.
// The supported subset, the whitespace rule and the limits are in docs/STRUCTURED_OUTPUT.md; any
// keyword outside the subset is refused (UnsupportedSchemaError), never silently ignored, so that
// what is generated always validates against the schema the user sent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "grammar/grammar_nodes.hpp"
#include "lathe/error.hpp"

namespace lathe::grammar {

// A keyword (or a use of one) that lathe's generator does not handle. The message names the
// keyword, its JSON pointer in the schema and the supported subset.
class UnsupportedSchemaError : public InvalidArgumentError {
 public:
  explicit UnsupportedSchemaError(const std::string& m) : InvalidArgumentError(m) {}
};

// A schema that is not valid JSON Schema or admits no value (type not a string, required not an
// array of strings, minItems > maxItems, an empty enum...). The message names the keyword, its
// JSON pointer and what to change.
class InvalidSchemaError : public InvalidArgumentError {
 public:
  explicit InvalidSchemaError(const std::string& m) : InvalidArgumentError(m) {}
};

// Bounds on the work a hostile schema can cause while compiling (the generated text is bounded by
// kMaxNesting and the whitespace rule of grammar_nodes.hpp).
struct SchemaLimits {
  size_t max_nodes = 4096;            // compiled nodes (each subschema, each type of a type array)
  size_t max_schema_depth = 64;       // nesting of subschemas walked while compiling
  size_t max_properties = 1024;       // properties of one object
  size_t max_enum_values = 1024;      // values of one enum
  size_t max_any_of = 64;             // branches of one anyOf
  size_t max_literal_bytes = 256 * 1024;  // every enum/const value and property name, serialized
  size_t max_schema_bytes = 1 << 20;  // the schema text (from_schema_text only)
};

class JsonGrammar {
 public:
  // "Any JSON object" (response_format {"type": "json_object"}): an object whose values are any
  // JSON values, nested at most kMaxNesting deep.
  static std::shared_ptr<const JsonGrammar> any_object();
  // From a JSON Schema. `where` names the schema in error messages
  // (e.g. "response_format.json_schema.schema"). The schema must be an ordered_json so that
  // properties are generated in the order the schema lists them.
  static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::ordered_json& schema,
                                                        const std::string& where = "schema",
                                                        const SchemaLimits& limits = {});
  // From the schema's JSON text (parsed keeping key order). Throws InvalidSchemaError for text
  // that is not JSON.
  static std::shared_ptr<const JsonGrammar> from_schema_text(std::string_view schema_text,
                                                             const std::string& where = "schema",
                                                             const SchemaLimits& limits = {});

  const detail::Program& program() const noexcept { return program_; }

  explicit JsonGrammar(detail::Program program) : program_(std::move(program)) {}

 private:
  detail::Program program_;
};

// The list of supported keywords, as error messages print it.
const char* supported_keywords_text() noexcept;

}  // namespace lathe::grammar
