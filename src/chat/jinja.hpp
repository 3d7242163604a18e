// A Jinja2 subset for chat templates: lexer, parser (AST) and tree-walking interpreter
// (jinja_lexer.cpp, jinja_parser.cpp, jinja_interpreter.cpp; their internal headers are
// jinja_value.hpp, jinja_lexer.hpp and jinja_ast.hpp).
//
// The environment matches what Hugging Face transformers renders chat templates with:
// jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) plus the
// loopcontrols extension (break/continue), the {% generation %} tag, a `tojson` filter that is
// json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False), and the
// globals raise_exception(msg) and strftime_now(fmt). docs/CHAT_TEMPLATES.md lists the subset.
//
// Errors: syntax errors -> FormatError, constructs outside the subset -> UnsupportedError, errors
// while rendering (undefined attribute, type mismatch, raise_exception, limits) ->
// InvalidArgumentError. Every message names the template, line and column.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lathe::jinja {

// Bounds that keep a hostile template from exhausting the stack, memory or time.
struct Limits {
  int max_parse_depth = 128;                         // nesting of expressions and blocks
  int max_eval_depth = 512;                          // nested evaluation, macro calls included
  uint64_t max_output_bytes = 16ull << 20;           // size of any rendered string
  uint64_t max_loop_iterations = 1'000'000;          // total over one render
  uint64_t max_work_bytes = 512ull << 20;            // bytes built by string/list operations
};

class Template {
 public:
  // Parses `source`; `name` appears in error messages (e.g. "model.gguf:tokenizer.chat_template").
  static Template parse(std::string_view source, std::string name = "<template>", Limits limits = {});

  // Renders with `context` (a JSON object: its keys become template variables). Thread-safe: a
  // Template is immutable after parse().
  std::string render(const nlohmann::json& context) const;

  struct Impl;

 private:
  explicit Template(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace lathe::jinja
