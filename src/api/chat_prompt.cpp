// lathe/chat.hpp: prompts as a model sees them in a chat (its own chat template).
#include <fmt/format.h>

#include "lathe/chat.hpp"
#include "lathe/error.hpp"

namespace lathe {

nlohmann::json chat_messages(std::string_view prompt, std::string_view system) {
  nlohmann::json messages = nlohmann::json::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", std::string(system)}});
  messages.push_back({{"role", "user"}, {"content", std::string(prompt)}});
  return messages;
}

std::string render_chat_prompt(const Model& model, const nlohmann::json& messages) {
  if (!model.has_chat_template())
    throw NotFoundError(fmt::format("{} has no chat template, so it cannot format a conversation; use --no-template "
                                    "to feed the raw text (for `lathe run`: leave out --chat)",
                                    model.summary().path));
  return model.apply_chat_template(messages, /*add_generation_prompt=*/true);
}

std::vector<TokenId> tokenize_chat_rendering(const Model& model, std::string_view rendered) {
  std::vector<TokenId> ids = model.tokenize(rendered, /*add_special=*/false, /*parse_special=*/true);
  const TokenId bos = model.bos();
  if (bos >= 0 && (ids.empty() || ids.front() != bos)) {
    // Whether the vocabulary adds a BOS is not part of the API; a probe tokenization tells.
    const auto probe = model.tokenize("a", /*add_special=*/true, /*parse_special=*/false);
    if (!probe.empty() && probe.front() == bos) ids.insert(ids.begin(), bos);
  }
  return ids;
}

std::vector<TokenId> chat_prompt_tokens(const Model& model, std::string_view prompt, const ChatPromptOptions& options) {
  if (!options.use_template) return model.tokenize(prompt, /*add_special=*/true, /*parse_special=*/true);
  return tokenize_chat_rendering(model, render_chat_prompt(model, chat_messages(prompt, options.system)));
}

}  // namespace lathe
