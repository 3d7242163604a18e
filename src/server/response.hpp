// What the server answers: OpenAI's response objects (chat.completion, chat.completion.chunk,
// text_completion), their log-probability entries, Server-Sent Events framing, and the stop-string
// matcher that keeps a possible stop string out of streamed text.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/generate.hpp"

namespace lathe::server {

// One generated token's log-probability entry as OpenAI reports it.
struct LogprobEntry {
  std::string token;  // the token's bytes (may be part of a character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // alternatives, most likely first
};

// What a response is about (shared by every chunk of a stream).
struct ResponseHead {
  std::string id;     // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;  // the served alias
};

struct Usage {
  uint32_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
};

// "stop" (end of generation or a stop string), "length" (max_tokens or the context).
std::string finish_reason(StopReason stop);

nlohmann::json usage_json(const Usage& usage);
nlohmann::json chat_logprobs_json(const std::vector<LogprobEntry>& entries);
nlohmann::json text_logprobs_json(const std::vector<LogprobEntry>& entries, size_t text_offset);

nlohmann::json chat_completion(const ResponseHead& head, const std::string& content, const std::string& finish,
                               const Usage& usage, const std::optional<std::vector<LogprobEntry>>& logprobs);
nlohmann::json text_completion(const ResponseHead& head, const std::string& text, const std::string& finish,
                               const Usage& usage, const std::optional<std::vector<LogprobEntry>>& logprobs);
// A streamed piece: delta {role?, content?} (chat) or text (completions), finish_reason null or set.
nlohmann::json chat_chunk(const ResponseHead& head, const nlohmann::json& delta, const nlohmann::json& logprobs,
                          const std::optional<std::string>& finish);
nlohmann::json text_chunk(const ResponseHead& head, const std::string& text, const nlohmann::json& logprobs,
                          const std::optional<std::string>& finish);
nlohmann::json usage_chunk(const ResponseHead& head, bool chat, const Usage& usage);

// JSON text of a value; invalid UTF-8 (a token that splits a character) becomes U+FFFD instead of
// throwing.
std::string dump(const nlohmann::json& value);
// "data: <json>\n\n"; sse_done() is "data: [DONE]\n\n".
std::string sse_event(const nlohmann::json& value);
std::string sse_done();

// Holds back streamed text that could be the start of a stop string, and cuts the text at the
// first stop string (which is never sent).
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Takes the next piece; returns the text that can be sent now.
  std::string push(std::string_view piece);
  // At the end (no stop string came): the text still held back.
  std::string flush();
  bool stopped() const noexcept { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace lathe::server
