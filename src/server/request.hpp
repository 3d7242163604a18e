// OpenAI request bodies (POST /v1/chat/completions, /v1/completions) checked and turned into what
// a generation needs. Every refusal is a 400 ApiError naming the field ("temperature: 3 is outside
// [0, 2]"); fields that would change the answer but are not supported (tools, n > 1, echo, ...)
// are refused, never silently ignored. Pure: no model needed (the model-dependent steps —
// rendering messages, tokenizing, the context check — are in inference.hpp).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lathe/generate.hpp"
#include "lathe/sampling.hpp"

namespace lathe::server {

enum class ResponseFormat { Text, JsonObject, JsonSchema };

struct CompletionRequest {
  bool chat = true;
  nlohmann::json messages = nlohmann::json::array();  // chat: [{"role", "content": string}]
  std::string prompt_text;                              // completions: a text prompt, or
  std::vector<TokenId> prompt_tokens;                   // completions: a token-array prompt
  std::optional<int32_t> max_tokens;                    // none: until the context is full
  SamplingOptions sampling;                             // lathe's defaults where the request is silent
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;                           // stream_options.include_usage
  int32_t top_logprobs = -1;                            // -1: no logprobs; else how many alternatives
  std::vector<std::pair<TokenId, float>> logit_bias;
  ResponseFormat format = ResponseFormat::Text;
  nlohmann::ordered_json schema;                        // JsonSchema: the schema, in its key order
  std::string model;                                    // as the client named it (answers use the alias)
  bool ignore_eos = false;                              // llama.cpp's extra: generate past end of generation
};

// Limits of a request (a client may not ask for more).
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopLength = 256;
inline constexpr int32_t kMaxTopLogprobs = 20;
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr size_t kMaxMessages = 4096;

// Bodies keep their key order: a JSON schema's properties are generated in the order it lists them.
CompletionRequest parse_chat_request(const nlohmann::ordered_json& body);
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body);

// The body text as JSON: 400 (param "body") for invalid JSON or anything but an object.
nlohmann::ordered_json parse_body(const std::string& text);

}  // namespace lathe::server
