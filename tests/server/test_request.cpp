// The server's request parsing (OpenAI bodies -> generation options, every refusal naming its
// field), its answers' JSON and Server-Sent Events framing, the stop-string matcher and the
// Prometheus text.
#include <gtest/gtest.h>

#include "server/api_error.hpp"
#include "server/metrics.hpp"
#include "server/request.hpp"
#include "server/response.hpp"

namespace lathe::server {
namespace {

using nlohmann::json;

json user(const std::string& text) { return json::array({{{"role", "user"}, {"content", text}}}); }

std::string param_of(const json& body, bool chat = true) {
  try {
    chat ? parse_chat_request(body) : parse_completion_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find(e.param()), std::string::npos) << e.what();
    return e.param();
  }
  return "(accepted)";
}

TEST(ServerRequest, ChatFieldsAreRead) {
  const json body = {{"messages", json::array({{{"role", "developer"}, {"content", "be brief"}},
                                                {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                                                             {{"type", "text"}, {"text", "b"}}})}}})},
                     {"max_completion_tokens", 7}, {"temperature", 0.5}, {"top_p", 0.9}, {"top_k", 5}, {"min_p", 0.1},
                     {"seed", 42}, {"stop", "END"}, {"stream", true}, {"stream_options", {{"include_usage", true}}},
                     {"logprobs", true}, {"top_logprobs", 3}, {"logit_bias", {{"17", -100}}},
                     {"frequency_penalty", 0.5}, {"presence_penalty", -0.5}, {"model", "gpt-x"}, {"user", "u"}};
  const CompletionRequest r = parse_chat_request(body);
  EXPECT_EQ(r.messages[0]["role"], "system");  // developer is OpenAI's newer name for it
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 5);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(r.top_logprobs, 3);
  ASSERT_EQ(r.logit_bias.size(), 1u);
  EXPECT_EQ(r.logit_bias[0].first, 17);
  EXPECT_FLOAT_EQ(r.logit_bias[0].second, -100.0f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, 0.5f);
  EXPECT_EQ(r.model, "gpt-x");
}

TEST(ServerRequest, DefaultsAreLathes) {
  const CompletionRequest r = parse_chat_request({{"messages", user("hi")}});
  EXPECT_FALSE(r.max_tokens.has_value());  // until the context is full
  EXPECT_FALSE(r.seed_given);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_EQ(r.format, ResponseFormat::Text);
  EXPECT_FLOAT_EQ(r.sampling.temperature, SamplingOptions{}.temperature);
}

TEST(ServerRequest, EveryRefusalNamesItsField) {
  EXPECT_EQ(param_of(json::object()), "messages");
  EXPECT_EQ(param_of({{"messages", json::array()}}), "messages");
  EXPECT_EQ(param_of({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}), "messages[0].role");
  EXPECT_EQ(param_of({{"messages", json::array({{{"role", "user"}}})}}), "messages[0].content");
  EXPECT_EQ(param_of({{"messages", json::array({{{"role", "assistant"}, {"content", "x"}, {"tool_calls", json::array()}}})}}),
            "messages[0].tool_calls");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"temperature", 2.5}}), "temperature");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"temperature", nullptr}}), "(accepted)");  // null = absent
  EXPECT_EQ(param_of({{"messages", user("x")}, {"top_p", 0}}), "top_p");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"max_tokens", -1}}), "max_tokens");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"max_tokens", 1e300}}), "max_tokens");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"seed", -3}}), "seed");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"seed", 1.5}}), "seed");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"stop", json::array({"a", ""})}}), "stop[1]");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"stop", json::array({"1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
                                                                       "11", "12", "13", "14", "15", "16", "17"})}}),
            "stop");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"n", 3}}), "n");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"n", 1}}), "(accepted)");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"tools", json::array()}}), "tools");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"logit_bias", {{"-4", 1}}}}), "logit_bias.-4");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"logit_bias", {{"4", 101}}}}), "logit_bias.4");
  EXPECT_EQ(param_of({{"messages", user("x")}, {"response_format", {{"type", "json_schema"}}}}), "response_format.json_schema");
  EXPECT_EQ(param_of({{"prompt", ""}}, false), "prompt");
  EXPECT_EQ(param_of({{"prompt", json::array({1, -2})}}, false), "prompt[1]");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"echo", true}}, false), "echo");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 21}}, false), "logprobs");
}

TEST(ServerRequest, BodyMustBeAJsonObject) {
  EXPECT_THROW(parse_body("{"), ApiError);
  EXPECT_THROW(parse_body("[]"), ApiError);
  EXPECT_THROW(parse_body(""), ApiError);
  EXPECT_NO_THROW(parse_body(R"({"a": 1})"));
}

TEST(ServerRequest, CompletionPrompts) {
  EXPECT_EQ(parse_completion_request({{"prompt", "abc"}}).prompt_text, "abc");
  EXPECT_EQ(parse_completion_request({{"prompt", json::array({"abc"})}}).prompt_text, "abc");
  EXPECT_EQ(parse_completion_request({{"prompt", json::array({1, 2, 3})}}).prompt_tokens, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"logprobs", 2}}).top_logprobs, 2);
}

TEST(ServerResponse, ErrorObjectHasOpenAisFields) {
  const ApiError e = bad_request("temperature", "3 is outside [0, 2]");
  const json body = e.body();
  EXPECT_EQ(body["error"]["param"], "temperature");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], "invalid_value");
  EXPECT_EQ(body["error"]["message"], "temperature: 3 is outside [0, 2]");
  EXPECT_TRUE(error_body("x", "server_error")["error"]["param"].is_null());
}

TEST(ServerResponse, SseFraming) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // a token that splits a character is replaced, never a throw
  EXPECT_EQ(dump(json(std::string("\xe2\x82"))), "\"\xef\xbf\xbd\"");
  const ResponseHead head{"chatcmpl-1", 5, "m"};
  const json chunk = chat_chunk(head, {{"content", "hi"}}, nullptr, std::nullopt);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(usage_chunk(head, true, {3, 1, 4})["usage"]["total_tokens"], 7);
  EXPECT_EQ(usage_chunk(head, true, {3, 1, 4})["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
}

TEST(ServerResponse, FinishReasons) {
  EXPECT_EQ(finish_reason(StopReason::MaxTokens), "length");
  EXPECT_EQ(finish_reason(StopReason::EndOfGeneration), "stop");
  EXPECT_EQ(finish_reason(StopReason::Callback), "stop");
}

std::string feed(StopStrings& stops, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& piece : pieces) out += stops.push(piece);
  return out + stops.flush();
}

TEST(ServerStopStrings, CutsAtTheFirstStopAndNeverSendsIt) {
  StopStrings a({"END"});
  EXPECT_EQ(feed(a, {"hello E", "N", "D more"}), "hello ");
  EXPECT_TRUE(a.stopped());
  StopStrings b({"END"});
  EXPECT_EQ(b.push("hello E"), "hello ");  // "E" may start "END": held back
  EXPECT_EQ(b.push("x"), "Ex");            // it did not
  EXPECT_EQ(b.flush(), "");
  StopStrings c({"ab", "b"});
  EXPECT_EQ(feed(c, {"xa", "b"}), "x");  // the earliest match wins
  StopStrings d({});
  EXPECT_EQ(feed(d, {"a", "b"}), "ab");
  StopStrings e({"stop"});
  EXPECT_EQ(feed(e, {"no st", "o"}), "no sto");  // never completed: everything goes out at the end
  EXPECT_FALSE(e.stopped());
}

TEST(ServerMetrics, PrometheusText) {
  Metrics m;
  m.running = 2;
  m.generated_tokens += 5;
  m.time_to_first_token.observe(0.2);
  m.time_to_first_token.observe(100);
  const std::string text = m.text();
  EXPECT_NE(text.find("# TYPE lathe_requests_running gauge\nlathe_requests_running 2\n"), std::string::npos);
  EXPECT_NE(text.find("lathe_generated_tokens_total 5\n"), std::string::npos);
  EXPECT_NE(text.find("lathe_time_to_first_token_seconds_bucket{le=\"0.25\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("lathe_time_to_first_token_seconds_bucket{le=\"60\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("lathe_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("lathe_time_to_first_token_seconds_count 2\n"), std::string::npos);
}

}  // namespace
}  // namespace lathe::server
