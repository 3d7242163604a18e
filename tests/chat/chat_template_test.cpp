// Chat templates of the shared vocabularies rendered by lathe and by jinja2 (as transformers
// configures it): byte-identical output or both raising. Also the template loader and the CLI.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "chat/chat_template.hpp"
#include "chat_oracle.hpp"
#include "common/test_support.hpp"
#include "lathe/error.hpp"

namespace lathe::test {
namespace {

using nlohmann::json;

// The Llama-2-chat template as published with meta-llama's chat models: the shared llama2
// vocabulary ships no chat template, so this one stands in for the Llama-2 family (it exercises
// raise_exception on non-alternating roles, slicing and .strip()).
constexpr const char* kLlama2ChatTemplate =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

ChatTemplateSource shared_template(const std::string& vocab) {
  return load_chat_template(shared_data_dir() / "tokenizers" / vocab);
}

std::vector<TemplateCase> standard_cases(const std::string& name, const ChatTemplateSource& t,
                                         const json& extra = json::object()) {
  std::vector<TemplateCase> cases;
  for (const auto& [label, messages] : standard_conversations())
    for (bool gen : {false, true})
      cases.push_back({name + "/" + label + (gen ? "/gen" : "/nogen"), t.source, chat_context(messages, gen, t.bos_token, t.eos_token, extra)});
  return cases;
}

TEST(ChatTemplateOracle, Qwen3MatchesJinja2) {
  const ChatTemplateSource t = shared_template("qwen3");
  ASSERT_FALSE(t.source.empty());
  EXPECT_EQ(t.eos_token, "<|im_end|>");
  std::vector<TemplateCase> cases = standard_cases("qwen3", t);
  const json tool_turns = json::array(
      {{{"role", "system"}, {"content", "Use tools."}},
       {{"role", "user"}, {"content", "Weather in Paris?"}},
       {{"role", "assistant"},
        {"content", ""},
        {"tool_calls", json::array({{{"type", "function"}, {"function", {{"name", "get_weather"}, {"arguments", {{"city", "Paris"}, {"unit", "°C"}}}}}},
                                    {{"type", "function"}, {"function", {{"name", "get_time"}, {"arguments", "{\"tz\": \"CET\"}"}}}}})}},
       {{"role", "tool"}, {"content", "{\"temp\": 21}"}},
       {{"role", "tool"}, {"content", "12:00"}},
       {{"role", "assistant"}, {"content", "It is 21°C at noon."}},
       {{"role", "user"}, {"content", "<tool_response>fake</tool_response>"}}});
  const json tools = json::array({{{"type", "function"},
                                   {"function", {{"name", "get_weather"}, {"description", "Weather \"now\""},
                                                 {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", json::array({"city"})}}}}}}});
  const json reasoning_turns = json::array(
      {{{"role", "user"}, {"content", "Think first."}},
       {{"role", "assistant"}, {"content", "<think>\nstep 1\nstep 2\n</think>\n\nThe answer."}},
       {{"role", "user"}, {"content", "Again"}},
       {{"role", "assistant"}, {"content", "Done."}, {"reasoning_content", "\nquick thought\n"}},
       {{"role", "assistant"}, {"content", "Extra."}, {"reasoning_content", nullptr}}});
  for (bool gen : {false, true}) {
    cases.push_back({"qwen3/tools", t.source, chat_context(tool_turns, gen, t.bos_token, t.eos_token, {{"tools", tools}})});
    cases.push_back({"qwen3/tool_calls_no_tools", t.source, chat_context(tool_turns, gen, t.bos_token, t.eos_token)});
    cases.push_back({"qwen3/reasoning", t.source, chat_context(reasoning_turns, gen, t.bos_token, t.eos_token)});
    cases.push_back({"qwen3/no_thinking", t.source,
                     chat_context(standard_conversations()[1].second, gen, t.bos_token, t.eos_token, {{"enable_thinking", false}})});
  }
  EXPECT_EQ(expect_matches_jinja2(cases), static_cast<int>(cases.size()));
}

TEST(ChatTemplateOracle, Llama3MatchesJinja2) {
  const ChatTemplateSource t = shared_template("llama3");
  ASSERT_FALSE(t.source.empty());
  EXPECT_EQ(t.bos_token, "<|begin_of_text|>");
  const auto cases = standard_cases("llama3", t);
  EXPECT_EQ(expect_matches_jinja2(cases), static_cast<int>(cases.size()));
}

TEST(ChatTemplateOracle, Llama2ChatTemplateMatchesJinja2IncludingRaise) {
  const ChatTemplateSource shared = shared_template("llama2");
  EXPECT_TRUE(shared.source.empty()) << "the shared llama2 tokenizer_config.json has no chat_template";
  EXPECT_EQ(shared.bos_token, "<s>");
  EXPECT_EQ(shared.eos_token, "</s>");
  ChatTemplateSource t = shared;
  t.source = kLlama2ChatTemplate;
  std::vector<TemplateCase> cases = standard_cases("llama2", t);
  const json bad_roles = json::array({{{"role", "user"}, {"content", "a"}}, {{"role", "user"}, {"content", "b"}}});
  cases.push_back({"llama2/bad_roles", t.source, chat_context(bad_roles, true, t.bos_token, t.eos_token)});
  const int rendered = expect_matches_jinja2(cases);
  EXPECT_EQ(rendered, static_cast<int>(cases.size()) - 1);  // only bad_roles raises
  try {
    render_chat(t.source, bad_roles, true, "<s>", "</s>");
    FAIL() << "expected the template to raise";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("Conversation roles must alternate"), std::string::npos) << e.what();
  }
}

// Engine features one by one, compared with jinja2 rather than with hand-written strings.
TEST(ChatTemplateOracle, EngineSnippetsMatchJinja2) {
  const json context = {{"x", 1}, {"y", 0}, {"d", {{"a", 1}, {"b", "two"}}}, {"l", {1, 2, 3, 4, 5}}, {"s", "hello"},
                        {"u", {{"k", "é\u00a0😀 \"q\""}}},
                        {"msgs", json::array({{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "yo"}},
                                              {{"role", "user"}, {"content", "again"}}})}};
  const std::vector<std::string> snippets = {
      "{{ 1 + 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 1.5 * 2 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1.0e-5 }}",
      "{{ 'a' ~ 1 ~ none ~ true }}|{{ [1, 'a', none, true, 1.5] }}|{{ {'a': 1, 'b': [2]} }}|{{ ('x',) }}|{{ (1, 2) }}",
      "{{ \"it's\" }}|{{ ['it\\'s', \"q\\\"\", 'n\\nl', 'tab\\t', '\\x01', 'é'] }}",
      "{% if x %}yes{% elif y %}elif{% else %}no{% endif %}{% if y %}1{% elif x %}2{% endif %}",
      "{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
      "{% for i in [] %}x{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}",
      "{% for x in range(10) if x is odd %}{{ x }}{{ loop.length }} {% endfor %}",
      "{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
      "{% set x = 1 %}{% for i in range(2) %}{% set x = 5 %}{% endfor %}{{ x }}",
      "{{ s[::-1] }}|{{ s[1:] }}|{{ s[:2] }}|{{ s[-2:] }}|{{ s[1:4:2] }}|{{ l[::-1] }}|{{ l[-1] }}|{{ l[10] }}|{{ l[5:1:-1] }}",
      "{{ '  hi  ' | trim }}|{{ 'abc' | length }}|{{ l | length }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}|{{ 'aXa' | replace('a', 'b') }}|{{ l | join(', ') }}|{{ l | first }}|{{ l | last }}",
      "{{ undefined_var | default('dflt') }}|{{ '' | default('x', true) }}|{{ none | default('x') }}|{{ 'abc' | list }}|{{ d | items | list }}|{{ 12 | string }}|{{ '42' | int + 1 }}|{{ 'x' | int }}|{{ 3.9 | int }}",
      "{{ 'hello world' | capitalize }}|{{ 'hello wORLD-foo' | title }}|{{ 'hello wORLD' .title() }}|{{ 'a' | safe }}",
      "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ u | tojson }}|{{ [1.5, none, true, 'x\"y\\\\z\\n'] | tojson }}|{{ {} | tojson(indent=2) }}",
      "{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\nabc'.lstrip('\\n') }}|{{ 'abc  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith('bc') }}|{{ 'aaa'.replace('a','b', 2) }}",
      "{{ d.get('a') }}|{{ d.get('zz', 'def') }}|{{ d.keys() | list }}|{{ d.values() | list }}|{{ d['a'] }}|{{ d.a }}",
      "{{ x is defined }}|{{ nope is defined }}|{{ nope is undefined }}|{{ none is none }}|{{ 'a' is string }}|{{ d is mapping }}|{{ l is iterable }}|{{ 3 is odd }}|{{ 4 is even }}|{{ 6 is divisibleby 3 }}|{{ x is not none }}|{{ false is false }}",
      "{{ 'a' if x else 'b' }}|{{ 'a' if not x else 'b' }}|{{ 'c' if false }}|{{ 1 and 2 }}|{{ 0 or 'z' }}|{{ not 1 }}|{{ 'b' in 'abc' }}|{{ 5 not in l }}|{{ 'a' in d }}|{{ 1 < 2 < 3 }}|{{ 1 == 1.0 }}|{{ true == 1 }}",
      "  {% if true %}\n    a\n  {% endif %}\n  b  {{ 'c' }}  \n{# comment #}\n  {#- c2 -#}  d\n",
      "x  {%- if true -%}  \n  y  \n  {%- endif -%}  z",
      "{{- ' a ' -}}   {{ 'b' }}\n{{ 'c' }}",
      "{% raw %}{{ not rendered }}{% endraw %}|{%- raw -%}  {% x %}  {%- endraw %}|",
      "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c') }}",
      "{% set content %}block {{ 1 + 1 }}{% endset %}[{{ content }}]",
      "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
      "{{ raise_exception('bad thing') }}",
      "{{ nope.attr }}",
      "{{ 'a' + 1 }}",
      "{{ l | map(attribute='x') | list }}|{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|{{ msgs | rejectattr('role', 'eq', 'user') | list | length }}",
      "{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort }}|{{ [3,1,2] | sort(reverse=true) }}|{{ [1, 2, 2, 3] | unique | list }}|{{ [1,5,3] | max }}|{{ [1,5,3] | min }}|{{ [1,2,3] | sum }}|{{ -3 | abs }}",
      "{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
      "{{ 'x' * 3 }}|{{ [1] * 3 }}|{{ 10 - 3 * 2 }}|{{ (10 - 3) * 2 }}|{{ -2 ** 2 }}|{{ 2 ** -1 }}|{{ 'ab' ~ 'cd' | upper }}|{{ l|length - 1 }}",
      "{{ 1.0 }}|{{ 100.0 }}|{{ 1e16 }}|{{ 1e15 }}|{{ 0.0001 }}|{{ 0.00001 }}|{{ -0.0 }}|{{ 3.14159 }}|{{ 1/3 }}|{{ 2.5e-7 }}",
      "{{ 'é€😀' | length }}|{{ 'é€😀'[1] }}|{{ 'é€😀'[::-1] }}|{{ '  é  ' | trim }}|{{ '\\u00e9\\U0001F600\\x41' }}",
      "{% for m in msgs %}{{ loop.previtem is defined }}{{ loop.cycle('a', 'b') }}{% endfor %}",
      "{{ 'a\\tb' | tojson }}|{{ '\\u2028' | tojson }}|{{ d | tojson(sort_keys=true) }}|{{ u | tojson(ensure_ascii=true) }}|{{ l | tojson(indent='\\t') }}|{{ d | tojson(separators=(',', ':')) }}",
      "{% generation %}gen {{ 1 }}{% endgeneration %}",
      "{{ x.missing is defined }}|{{ d.missing }}|{{ d['missing'] is defined }}",
      "{{ 'abc' | first }}{{ 'abc' | last }}|{{ '' | first }}|{{ 'Hello World' | wordcount }}|{{ 'a\\nb' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 3.7 | round }}|{{ 3.14159 | round(2) }}",
      "{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ 'abcb'.find('b') }}|{{ 'abcb'.count('b') }}|{{ ', '.join(['x', 'y']) }}",
      "{{ range(0, 10, 3) | list }}|{{ range(5, 0, -2) | list }}|{{ range(0) | list }}",
      "{{ '' ~ 1.0 }}|{{ 10 / 5 }}|{{ 7.0 // 2 }}|{{ -7.5 % 2 }}|{{ 2 ** 0.5 }}|{{ 1 + true }}",
      "{{ x | string | length }}|{{ none | string }}|{{ [none] | string }}|{{ {'a': none} }}",
      "{% for x in d %}{{ x }}{% endfor %}|{% for c in 'ab' %}{{ c }}.{% endfor %}",
      "line1\n{% for i in range(2) %}\n  item {{ i }}\n{% endfor %}\nend\n",
      "\t{%+ if true %}x{% endif +%}\n  {{ 'v' }}\n",
      "a\n\n",
      "{% if true %}\n{% endif %}",
      "{{ 'x' }}\r\n",
      "{{ 1 / 0 }}",
      "{{ [1, 2] < [1, 3] }}|{{ 'a' < 'b' }}|{{ (1, 2) == [1, 2] }}",
  };
  std::vector<TemplateCase> cases;
  for (size_t k = 0; k < snippets.size(); ++k) cases.push_back({"snippet " + std::to_string(k), snippets[k], context});
  const int rendered = expect_matches_jinja2(cases);
  EXPECT_EQ(rendered, static_cast<int>(cases.size()) - 4);  // raise_exception, nope.attr, 'a' + 1, 1 / 0
}

TEST(ChatTemplateLoader, DirectoryWithObjectTokensAndTemplateList) {
  TempDir dir("chat_loader");
  write_file(dir / "tokenizer_config.json",
             R"({"bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>",
                 "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})");
  const ChatTemplateSource t = load_chat_template(dir.path());
  EXPECT_EQ(t.bos_token, "<B>");
  EXPECT_EQ(t.eos_token, "<E>");
  EXPECT_EQ(render_chat(t.source, json::array({{{"role", "user"}, {"content", "x"}}}), false, t.bos_token, t.eos_token), "<B>x<E>");
}

TEST(ChatTemplateLoader, ChatTemplateJinjaFileAndMissingTemplate) {
  TempDir dir("chat_loader2");
  write_file(dir / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_TRUE(load_chat_template(dir.path()).source.empty());
  write_file(dir / "chat_template.jinja", "{{ messages | length }}");
  const ChatTemplateSource t = load_chat_template(dir.path());
  EXPECT_EQ(t.source, "{{ messages | length }}");
  EXPECT_EQ(render_chat(t.source, json::array({1, 2}), false, "", ""), "2");
  EXPECT_THROW(load_chat_template(dir / "missing"), NotFoundError);
  EXPECT_THROW(render_chat(t.source, json::object(), false, "", ""), InvalidArgumentError);
}

TEST(ChatTemplateCli, RendersSharedTokenizerDirectory) {
  TempDir dir("chat_cli");
  write_file(dir / "messages.json", R"([{"role": "user", "content": "Hi"}])");
  const auto qwen = (shared_data_dir() / "tokenizers" / "qwen3").string();
  CommandResult r = run_command({cli_path().string(), "template", "-m", qwen, "--messages", (dir / "messages.json").string(),
                                 "--system", "Sys"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  r = run_command({cli_path().string(), "template", "-m", qwen, "--messages", (dir / "messages.json").string(),
                   "--no-generation-prompt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nHi<|im_end|>\n");

  // llama2's tokenizer_config.json has no template: a clear error that suggests --template.
  const auto llama2 = (shared_data_dir() / "tokenizers" / "llama2").string();
  r = run_command({cli_path().string(), "template", "-m", llama2, "--messages", (dir / "messages.json").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--template"), std::string::npos) << r.err;

  write_file(dir / "t.jinja", "{{ bos_token }}[{{ messages[0].content }}]{{ eos_token }}");
  r = run_command({cli_path().string(), "template", "-m", llama2, "--messages", (dir / "messages.json").string(), "--template",
                   (dir / "t.jinja").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<s>[Hi]</s>");
}

}  // namespace
}  // namespace lathe::test
