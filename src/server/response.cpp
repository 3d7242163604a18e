#include "server/response.hpp"

namespace lathe::server {
namespace {

using nlohmann::json;

json bytes_of(const std::string& text) {
  json out = json::array();
  for (unsigned char c : text) out.push_back(static_cast<int>(c));
  return out;
}

json base(const ResponseHead& head, const char* object) {
  return {{"id", head.id}, {"object", object}, {"created", head.created}, {"model", head.model},
          {"system_fingerprint", "lathe-" LATHE_VERSION}};
}

json logprobs_or_null(const std::optional<std::vector<LogprobEntry>>& entries, bool chat) {
  if (!entries) return nullptr;
  return chat ? chat_logprobs_json(*entries) : text_logprobs_json(*entries, 0);
}

}  // namespace

std::string finish_reason(StopReason stop) {
  switch (stop) {
    case StopReason::MaxTokens: return "length";
    case StopReason::EndOfGeneration:
    case StopReason::Callback: return "stop";
    case StopReason::Cancelled: return "cancelled";
    case StopReason::Failed: return "error";
  }
  return "stop";
}

json usage_json(const Usage& usage) {
  const uint32_t prompt = usage.prompt_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", prompt + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

json chat_logprobs_json(const std::vector<LogprobEntry>& entries) {
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const auto& [token, logprob] : e.top)
      top.push_back({{"token", token}, {"logprob", logprob}, {"bytes", bytes_of(token)}});
    content.push_back({{"token", e.token}, {"logprob", e.logprob}, {"bytes", bytes_of(e.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json text_logprobs_json(const std::vector<LogprobEntry>& entries, size_t text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  size_t offset = text_offset;
  for (const LogprobEntry& e : entries) {
    tokens.push_back(e.token);
    token_logprobs.push_back(e.logprob);
    json top = json::object();
    for (const auto& [token, logprob] : e.top) top[token] = logprob;
    top_logprobs.push_back(top);
    offsets.push_back(offset);
    offset += e.token.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

json chat_completion(const ResponseHead& head, const std::string& content, const std::string& finish, const Usage& usage,
                     const std::optional<std::vector<LogprobEntry>>& logprobs) {
  json out = base(head, "chat.completion");
  out["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", content}}},
                                 {"logprobs", logprobs_or_null(logprobs, true)},
                                 {"finish_reason", finish}}});
  out["usage"] = usage_json(usage);
  return out;
}

json text_completion(const ResponseHead& head, const std::string& text, const std::string& finish, const Usage& usage,
                     const std::optional<std::vector<LogprobEntry>>& logprobs) {
  json out = base(head, "text_completion");
  out["choices"] = json::array(
      {{{"index", 0}, {"text", text}, {"logprobs", logprobs_or_null(logprobs, false)}, {"finish_reason", finish}}});
  out["usage"] = usage_json(usage);
  return out;
}

json chat_chunk(const ResponseHead& head, const json& delta, const json& logprobs, const std::optional<std::string>& finish) {
  json out = base(head, "chat.completion.chunk");
  out["choices"] = json::array({{{"index", 0},
                                 {"delta", delta},
                                 {"logprobs", logprobs},
                                 {"finish_reason", finish ? json(*finish) : json(nullptr)}}});
  return out;
}

json text_chunk(const ResponseHead& head, const std::string& text, const json& logprobs,
                const std::optional<std::string>& finish) {
  json out = base(head, "text_completion");
  out["choices"] = json::array(
      {{{"index", 0}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish ? json(*finish) : json(nullptr)}}});
  return out;
}

json usage_chunk(const ResponseHead& head, bool chat, const Usage& usage) {
  json out = base(head, chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& value) { return "data: " + dump(value) + "\n\n"; }
std::string sse_done() { return "data: [DONE]\n\n"; }

std::string StopStrings::push(std::string_view piece) {
  if (stopped_) return {};
  held_.append(piece);
  if (stops_.empty()) return std::exchange(held_, {});
  // The earliest stop string ends the text there.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, held_.find(stop));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is the start of some stop string: it may still become one.
  size_t keep = 0;
  for (const std::string& stop : stops_)
    for (size_t n = std::min(stop.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStrings::flush() { return stopped_ ? std::string() : std::exchange(held_, {}); }

}  // namespace lathe::server
