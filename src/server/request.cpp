#include "server/request.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "server/api_error.hpp"

namespace lathe::server {
namespace {

using json = nlohmann::ordered_json;

// Fields that would change the answer and that lathe does not do: refused, never ignored.
constexpr const char* kUnsupportedFields[] = {"tools", "tool_choice", "functions", "function_call", "audio",
                                              "modalities", "prediction", "suffix", "web_search_options"};

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& value, const std::string& name) {
  if (!value.is_number()) throw bad_request(name, fmt::format("must be a number (got {})", value.dump()));
  const double x = value.get<double>();
  if (!std::isfinite(x)) throw bad_request(name, "must be a finite number");
  return x;
}

double number_in(const json& value, const std::string& name, double lo, double hi) {
  const double x = number(value, name);
  if (x < lo || x > hi) throw bad_request(name, fmt::format("{} is outside [{}, {}]", x, lo, hi));
  return x;
}

int64_t integer_in(const json& value, const std::string& name, int64_t lo, int64_t hi) {
  if (!value.is_number_integer()) throw bad_request(name, fmt::format("must be an integer (got {})", value.dump()));
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(hi))
    throw bad_request(name, fmt::format("{} is outside [{}, {}]", value.dump(), lo, hi));
  const int64_t x = value.get<int64_t>();
  if (x < lo || x > hi) throw bad_request(name, fmt::format("{} is outside [{}, {}]", x, lo, hi));
  return x;
}

bool boolean(const json& value, const std::string& name) {
  if (!value.is_boolean()) throw bad_request(name, fmt::format("must be true or false (got {})", value.dump()));
  return value.get<bool>();
}

void refuse_unsupported(const json& body) {
  for (const char* name : kUnsupportedFields)
    if (field(body, name) != nullptr)
      throw bad_request(name, "is not supported by lathe serve (remove the field)", "unsupported_parameter");
  if (const json* n = field(body, "n"); n != nullptr && integer_in(*n, "n", 1, 1000) != 1)
    throw bad_request("n", "only n = 1 (one choice per request) is supported; send several requests instead",
                      "unsupported_parameter");
}

// The sampler and length fields both endpoints share.
void parse_sampling(const json& body, CompletionRequest& r, const char* max_tokens_field) {
  SamplingOptions& s = r.sampling;
  if (const json* v = field(body, max_tokens_field)) r.max_tokens = static_cast<int32_t>(integer_in(*v, max_tokens_field, 1, 1 << 24));
  if (const json* v = field(body, "temperature")) s.temperature = static_cast<float>(number_in(*v, "temperature", 0, 2));
  if (const json* v = field(body, "top_p")) {
    s.top_p = static_cast<float>(number_in(*v, "top_p", 0, 1));
    if (s.top_p <= 0) throw bad_request("top_p", "must be above 0 (1 = off)");
  }
  if (const json* v = field(body, "top_k")) s.top_k = static_cast<int32_t>(integer_in(*v, "top_k", 0, 1 << 24));
  if (const json* v = field(body, "min_p")) s.min_p = static_cast<float>(number_in(*v, "min_p", 0, 1));
  if (const json* v = field(body, "frequency_penalty"))
    s.frequency_penalty = static_cast<float>(number_in(*v, "frequency_penalty", -2, 2));
  if (const json* v = field(body, "presence_penalty"))
    s.presence_penalty = static_cast<float>(number_in(*v, "presence_penalty", -2, 2));
  if (const json* v = field(body, "repeat_penalty")) {
    s.repeat_penalty = static_cast<float>(number_in(*v, "repeat_penalty", 0, 10));
    if (s.repeat_penalty <= 0) throw bad_request("repeat_penalty", "must be above 0 (1 = off)");
  }
  if (const json* v = field(body, "repeat_last_n")) s.penalty_last_n = static_cast<int32_t>(integer_in(*v, "repeat_last_n", -1, 1 << 24));
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer() || (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0))
      throw bad_request("seed", fmt::format("must be a whole number >= 0 (got {})", v->dump()));
    s.seed = v->get<uint64_t>();
    r.seed_given = true;
  }
  if (const json* v = field(body, "stop")) {
    auto add = [&](const json& item, const std::string& name) {
      if (!item.is_string()) throw bad_request(name, "must be a string");
      const auto& text = item.get_ref<const std::string&>();
      if (text.empty()) throw bad_request(name, "must not be empty");
      if (text.size() > kMaxStopLength) throw bad_request(name, fmt::format("is longer than {} bytes", kMaxStopLength));
      r.stop.push_back(text);
    };
    if (v->is_string()) {
      add(*v, "stop");
    } else if (v->is_array()) {
      if (v->size() > kMaxStopStrings) throw bad_request("stop", fmt::format("at most {} stop strings", kMaxStopStrings));
      for (size_t i = 0; i < v->size(); ++i) add((*v)[i], fmt::format("stop[{}]", i));
    } else {
      throw bad_request("stop", "must be a string or an array of strings");
    }
  }
  if (const json* v = field(body, "stream")) r.stream = boolean(*v, "stream");
  if (const json* v = field(body, "stream_options")) {
    if (!v->is_object()) throw bad_request("stream_options", "must be an object");
    if (!r.stream) throw bad_request("stream_options", "is only allowed with \"stream\": true");
    if (const json* u = field(*v, "include_usage")) r.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const json* v = field(body, "logit_bias")) {
    if (!v->is_object()) throw bad_request("logit_bias", "must be an object of token id -> bias");
    if (v->size() > kMaxLogitBias) throw bad_request("logit_bias", fmt::format("at most {} entries", kMaxLogitBias));
    for (const auto& [key, bias] : v->items()) {
      const std::string name = "logit_bias." + key;
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || id < 0 || id > std::numeric_limits<int32_t>::max())
        throw bad_request(name, "keys must be token ids (whole numbers >= 0)");
      r.logit_bias.emplace_back(static_cast<TokenId>(id), static_cast<float>(number_in(bias, name, -100, 100)));
    }
  }
  if (const json* v = field(body, "ignore_eos")) r.ignore_eos = boolean(*v, "ignore_eos");
  if (const json* v = field(body, "model")) {
    if (!v->is_string()) throw bad_request("model", "must be a string");
    r.model = v->get<std::string>();
  }
}

void parse_response_format(const json& body, CompletionRequest& r) {
  const json* v = field(body, "response_format");
  if (v == nullptr) return;
  if (!v->is_object() || !v->contains("type") || !(*v)["type"].is_string())
    throw bad_request("response_format", "must be an object with a \"type\": \"text\", \"json_object\" or \"json_schema\"");
  const std::string type = (*v)["type"].get<std::string>();
  if (type == "text") return;
  if (type == "json_object") {
    r.format = ResponseFormat::JsonObject;
    return;
  }
  if (type != "json_schema")
    throw bad_request("response_format.type", fmt::format("'{}' is not one of text, json_object, json_schema", type));
  const json* spec = field(*v, "json_schema");
  if (spec == nullptr || !spec->is_object())
    throw bad_request("response_format.json_schema", "must be an object with the schema under \"schema\"");
  const json* schema = field(*spec, "schema");
  if (schema == nullptr || !(schema->is_object() || schema->is_boolean()))
    throw bad_request("response_format.json_schema.schema", "must be a JSON Schema object");
  r.format = ResponseFormat::JsonSchema;
  r.schema = *schema;
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
std::string message_content(const json& content, const std::string& name) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw bad_request(name, "must be a string or an array of text parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_name = fmt::format("{}[{}]", name, i);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw bad_request(part_name, "must be an object with a \"type\"");
    if (part["type"] != "text")
      throw bad_request(part_name + ".type",
                        fmt::format("'{}' parts are not supported (text only)", part["type"].get<std::string>()),
                        "unsupported_parameter");
    if (!part.contains("text") || !part["text"].is_string()) throw bad_request(part_name + ".text", "must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

nlohmann::json parse_messages(const json& body) {
  const json* v = field(body, "messages");
  if (v == nullptr) throw bad_request("messages", "is required (an array of {\"role\", \"content\"})", "missing_field");
  if (!v->is_array() || v->empty()) throw bad_request("messages", "must be a non-empty array");
  if (v->size() > kMaxMessages) throw bad_request("messages", fmt::format("at most {} messages", kMaxMessages));
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string name = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw bad_request(name, "must be an object with \"role\" and \"content\"");
    if (!m.contains("role") || !m["role"].is_string()) throw bad_request(name + ".role", "is required (a string)");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role == "tool" || role == "function")
      throw bad_request(name + ".role", fmt::format("'{}' messages are not supported (no tool calling)", role),
                        "unsupported_parameter");
    if (role != "system" && role != "user" && role != "assistant")
      throw bad_request(name + ".role", fmt::format("'{}' is not a role: use system, user or assistant", role));
    if (m.contains("tool_calls") && !m["tool_calls"].is_null())
      throw bad_request(name + ".tool_calls", "tool calls are not supported", "unsupported_parameter");
    const json* content = field(m, "content");
    if (content == nullptr) throw bad_request(name + ".content", "is required");
    out.push_back({{"role", role}, {"content", message_content(*content, name + ".content")}});
  }
  return out;
}

}  // namespace

json parse_body(const std::string& text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) throw bad_request("body", "is not valid JSON", "invalid_json");
  if (!body.is_object()) throw bad_request("body", "must be a JSON object", "invalid_json");
  return body;
}

CompletionRequest parse_chat_request(const json& body) {
  CompletionRequest r;
  r.chat = true;
  refuse_unsupported(body);
  r.messages = parse_messages(body);
  // max_completion_tokens is OpenAI's newer name; both may not disagree.
  parse_sampling(body, r, "max_tokens");
  if (const json* v = field(body, "max_completion_tokens")) {
    const auto n = static_cast<int32_t>(integer_in(*v, "max_completion_tokens", 1, 1 << 24));
    if (r.max_tokens && *r.max_tokens != n)
      throw bad_request("max_completion_tokens", fmt::format("{} disagrees with max_tokens {}", n, *r.max_tokens));
    r.max_tokens = n;
  }
  const json* logprobs = field(body, "logprobs");
  const bool want_logprobs = logprobs != nullptr && boolean(*logprobs, "logprobs");
  if (const json* v = field(body, "top_logprobs")) {
    const auto n = static_cast<int32_t>(integer_in(*v, "top_logprobs", 0, kMaxTopLogprobs));
    if (!want_logprobs) throw bad_request("top_logprobs", "needs \"logprobs\": true");
    r.top_logprobs = n;
  } else if (want_logprobs) {
    r.top_logprobs = 0;
  }
  parse_response_format(body, r);
  return r;
}

CompletionRequest parse_completion_request(const json& body) {
  CompletionRequest r;
  r.chat = false;
  refuse_unsupported(body);
  if (const json* v = field(body, "echo"); v != nullptr && boolean(*v, "echo"))
    throw bad_request("echo", "is not supported (the answer never repeats the prompt)", "unsupported_parameter");
  if (const json* v = field(body, "best_of"); v != nullptr && integer_in(*v, "best_of", 1, 1000) != 1)
    throw bad_request("best_of", "only best_of = 1 is supported", "unsupported_parameter");
  const json* prompt = field(body, "prompt");
  if (prompt == nullptr) throw bad_request("prompt", "is required (a string or an array of token ids)", "missing_field");
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) prompt = &(*prompt)[0];
  if (prompt->is_string()) {
    r.prompt_text = prompt->get<std::string>();
    if (r.prompt_text.empty()) throw bad_request("prompt", "must not be empty");
  } else if (prompt->is_array() && !prompt->empty()) {
    for (size_t i = 0; i < prompt->size(); ++i)
      r.prompt_tokens.push_back(static_cast<TokenId>(
          integer_in((*prompt)[i], fmt::format("prompt[{}]", i), 0, std::numeric_limits<int32_t>::max())));
  } else {
    throw bad_request("prompt", "must be a non-empty string or array of token ids (one prompt per request)");
  }
  parse_sampling(body, r, "max_tokens");
  if (const json* v = field(body, "logprobs")) r.top_logprobs = static_cast<int32_t>(integer_in(*v, "logprobs", 0, kMaxTopLogprobs));
  parse_response_format(body, r);
  return r;
}

}  // namespace lathe::server
