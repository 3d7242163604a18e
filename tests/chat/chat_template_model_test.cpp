// SmolLM2's chat template, read from the default model's GGUF by lathe (gguf::File) and by gguf-py,
// rendered by lathe and by jinja2: same template bytes, byte-identical prompts.
#include <gtest/gtest.h>

#include "chat/chat_template.hpp"
#include "chat_oracle.hpp"
#include "common/test_support.hpp"

namespace lathe::test {
namespace {

TEST(ChatTemplateModel, SmolLM2MatchesJinja2) {
  LATHE_REQUIRE_MODEL();
  const ChatTemplateSource t = load_chat_template(default_model());
  const CommandResult r = run_oracle("chat_template_oracle.py", {"gguf-template", default_model().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(t.source, r.out);
  EXPECT_NE(t.source.find("SmolLM"), std::string::npos);
  EXPECT_EQ(t.bos_token, "<|im_start|>");
  EXPECT_EQ(t.eos_token, "<|im_end|>");
  std::vector<TemplateCase> cases;
  for (const auto& [label, messages] : standard_conversations())
    for (bool gen : {false, true})
      cases.push_back({"smollm2/" + label + (gen ? "/gen" : "/nogen"), t.source, chat_context(messages, gen, t.bos_token, t.eos_token)});
  EXPECT_EQ(expect_matches_jinja2(cases), static_cast<int>(cases.size()));
  // Spot check of the default-system-prompt branch.
  const std::string prompt = render_chat(t.source, nlohmann::json::array({{{"role", "user"}, {"content", "Hi"}}}), true,
                                         t.bos_token, t.eos_token);
  EXPECT_EQ(prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace lathe::test
