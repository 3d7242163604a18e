// Differential testing of chat template rendering against Python jinja2 configured as
// transformers does (tests/oracle/chat_template_oracle.py).
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chat/chat_template.hpp"
#include "chat/jinja.hpp"
#include "common/test_support.hpp"
#include "lathe/error.hpp"

namespace lathe::test {

struct TemplateCase {
  std::string label;
  std::string template_source;
  nlohmann::json context;  // the full render context
};

// The context render_chat() builds, so that the oracle renders with the same variables.
inline nlohmann::json chat_context(const nlohmann::json& messages, bool add_generation_prompt, const std::string& bos,
                                   const std::string& eos, const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json context = {{"bos_token", bos}, {"eos_token", eos}, {"tools", nullptr}, {"documents", nullptr}};
  for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  return context;
}

// Renders every case with jinja2 (one Python process) and with lathe; expects byte-identical
// output, or both raising. Returns how many cases jinja2 rendered without raising.
inline int expect_matches_jinja2(const std::vector<TemplateCase>& cases) {
  TempDir dir("chat_oracle");
  nlohmann::json input = nlohmann::json::array();
  for (const auto& c : cases) input.push_back({{"template", c.template_source}, {"context", c.context}});
  write_file(dir / "cases.json", input.dump());
  const CommandResult r = run_oracle("chat_template_oracle.py", {"render", (dir / "cases.json").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return 0;
  const nlohmann::json expected = nlohmann::json::parse(r.out);
  EXPECT_EQ(expected.size(), cases.size());
  int rendered = 0;
  for (size_t k = 0; k < cases.size() && k < expected.size(); ++k) {
    const auto& c = cases[k];
    const bool py_ok = expected[k]["ok"].get<bool>();
    std::string ours;
    std::string our_error;
    try {
      ours = jinja::Template::parse(c.template_source, c.label).render(c.context);
    } catch (const Error& e) {
      our_error = e.what();
    }
    if (py_ok) {
      ++rendered;
      EXPECT_EQ(our_error, "") << c.label;
      EXPECT_EQ(ours, expected[k]["out"].get<std::string>()) << c.label;
    } else {
      EXPECT_NE(our_error, "") << c.label << ": jinja2 raised " << expected[k]["error"] << " but lathe rendered:\n" << ours;
    }
  }
  return rendered;
}

// Conversations exercising the usual chat template branches.
inline std::vector<std::pair<std::string, nlohmann::json>> standard_conversations() {
  using nlohmann::json;
  return {
      {"single_turn", json::array({{{"role", "user"}, {"content", "Hello!"}}})},
      {"system_single", json::array({{{"role", "system"}, {"content", "You are terse."}}, {{"role", "user"}, {"content", "Hi"}}})},
      {"multi_turn", json::array({{{"role", "user"}, {"content", "What is 2+2?"}},
                                  {{"role", "assistant"}, {"content", "4"}},
                                  {{"role", "user"}, {"content", "And 3+3?"}}})},
      {"system_multi_turn", json::array({{{"role", "system"}, {"content", "Be kind."}},
                                         {{"role", "user"}, {"content", "Hi"}},
                                         {{"role", "assistant"}, {"content", "Hello! How can I help?"}},
                                         {{"role", "user"}, {"content", "Tell me a joke."}}})},
      {"special_content", json::array({{{"role", "system"}, {"content", "  Quotes: \"double\" 'single' \\ backslash\n"}},
                                       {{"role", "user"}, {"content", "Line 1\nLine 2\n\n\ttabbed — é ü 中文 😀 {{ not a tag }} {% x %}"}},
                                       {{"role", "assistant"}, {"content", "  padded answer  \n"}},
                                       {{"role", "user"}, {"content", "</s><|im_end|> fake specials"}}})},
      {"empty_content", json::array({{{"role", "user"}, {"content", ""}}})},
  };
}

}  // namespace lathe::test
