// Unit tests of the Jinja subset: statements, expressions, filters, whitespace control, error
// messages and limits. Expected strings follow jinja2 3.1 semantics (the oracle-labelled
// chat_template_test checks the same features against jinja2 itself).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "chat/jinja.hpp"
#include "lathe/error.hpp"

namespace lathe::jinja {
namespace {

using nlohmann::json;

std::string render(const std::string& source, const json& context = json::object(), Limits limits = {}) {
  return Template::parse(source, "t.jinja", limits).render(context);
}

template <typename E>
std::string error_of(const std::string& source, const json& context = json::object(), Limits limits = {}) {
  try {
    render(source, context, limits);
  } catch (const E& e) {
    return e.what();
  } catch (const Error& e) {
    return std::string("wrong error type: ") + e.what();
  }
  return "no error";
}

TEST(Jinja, TextAndOutput) {
  EXPECT_EQ(render("plain text"), "plain text");
  EXPECT_EQ(render("{{ 'a' }}{{ \"b\" }}{{ 1 }}{{ 1.5 }}{{ true }}{{ none }}"), "ab11.5TrueNone");
  EXPECT_EQ(render("{{ x }}", {{"x", "X"}}), "X");
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{# comment #}x"), "x");
  EXPECT_EQ(render("{{ 'tab\\tnl\\n\\u00e9\\x41' }}"), "tab\tnl\n\xc3\xa9" "A");
}

TEST(Jinja, TrailingNewlineAndCrlf) {
  EXPECT_EQ(render("a\n"), "a");
  EXPECT_EQ(render("a\n\n"), "a\n");
  EXPECT_EQ(render("a\r\nb\r\n"), "a\nb");
}

TEST(Jinja, WhitespaceControl) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it goes.
  EXPECT_EQ(render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
  EXPECT_EQ(render("a  {%- if true -%}  \n b {%- endif %}"), "ab");
  EXPECT_EQ(render("a {{- ' b ' -}} c"), "a b c");
  EXPECT_EQ(render("{{ 'v' }}\n"), "v");
  EXPECT_EQ(render("{{ 'v' }}\nw"), "v\nw");  // no trim after {{ }}
  EXPECT_EQ(render("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");
  EXPECT_EQ(render("x  {% if true %}y{% endif %}"), "x  y");  // lstrip only at line start
  EXPECT_EQ(render("{% raw %}{{ a }}{% endraw %}"), "{{ a }}");
}

TEST(Jinja, IfElifElse) {
  const std::string t = "{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %}";
  EXPECT_EQ(render(t, {{"n", 1}}), "one");
  EXPECT_EQ(render(t, {{"n", 2}}), "two");
  EXPECT_EQ(render(t, {{"n", 3}}), "many");
}

TEST(Jinja, ForLoop) {
  EXPECT_EQ(render("{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}",
                   {{"l", {"a", "b"}}}),
            "102TrueFalse2 211FalseTrue2 ");
  EXPECT_EQ(render("{% for x in l %}{{ x }}{% else %}none{% endfor %}", {{"l", json::array()}}), "none");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"b", 1}, {"a", 2}}}}), "a=2;b=1;");
  EXPECT_EQ(render("{% for x in range(6) if x is even %}{{ x }}/{{ loop.length }} {% endfor %}"), "0/3 2/3 4/3 ");
  EXPECT_EQ(render("{% for x in range(9) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "013");
  EXPECT_EQ(render("{% for m in messages[::-1] %}{{ m }}{% endfor %}", {{"messages", {1, 2, 3}}}), "321");
}

TEST(Jinja, SetAndNamespace) {
  EXPECT_EQ(render("{% set x = 1 %}{% for i in range(3) %}{% set x = i %}{% endfor %}{{ x }}"), "1");  // loop scope
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% for i in range(3) %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}"), "4");
  EXPECT_EQ(render("{% set a, b = 'p', 'q' %}{{ b }}{{ a }}"), "qp");
  EXPECT_EQ(render("{% set c %}in{{ 1 }}{% endset %}[{{ c }}]"), "[in1]");
  EXPECT_NE(error_of<InvalidArgumentError>("{% set s = 'x' %}{% set s.a = 1 %}").find("namespace"), std::string::npos);
}

TEST(Jinja, Macro) {
  EXPECT_EQ(render("{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b='x') }}"), "<1d><2x>");
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 }} {{ 1 + 2 * 3 }}"), "3 -4 2 3.5 8 7");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}|{{ 'a' + 'b' }}|{{ [1] + [2] }}"), "a1None|ab|[1, 2]");
  EXPECT_EQ(render("{{ 1 < 2 }} {{ 'b' in 'abc' }} {{ 3 not in [1] }} {{ not 0 }} {{ 0 or 'y' }} {{ 1 and 'z' }}"), "True True True True y z");
  EXPECT_EQ(render("{{ 'y' if x else 'n' }}{{ 'never' if false }}", {{"x", true}}), "y");
  EXPECT_EQ(render("{{ m['role'] }}{{ m.role }}{{ m.missing is defined }}", {{"m", {{"role", "user"}}}}), "useruserFalse");
  EXPECT_EQ(render("{{ s[1:] }}{{ s[:1] }}{{ s[::-1] }}{{ s[-1] }}", {{"s", "abc"}}), "bcacbac");
  EXPECT_EQ(render("{{ [1, 'a', none, true] }} {{ {'k': 'v'} }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 2.0 }}"),
            "[1, 'a', None, True] {'k': 'v'} 0.30000000000000004 1e+16 2.0");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }}{{ y is defined }}{{ x is string }}{{ n is none }}{{ n is not none }}{{ d is mapping }}{{ 4 is even }}",
                   {{"x", "s"}, {"n", nullptr}, {"d", json::object()}}),
            "TrueFalseTrueTrueFalseTrueTrue");
  EXPECT_EQ(render("{{ f is false }}{{ 6 is divisibleby 3 }}{{ 1 is number }}", {{"f", false}}), "TrueTrueTrue");
}

TEST(Jinja, Filters) {
  EXPECT_EQ(render("{{ '  a b  ' | trim }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}|{{ 'ab' | length }}|{{ 'xay' | replace('a', 'b') }}"),
            "a b|AB|ab|2|xby");
  EXPECT_EQ(render("{{ l | join(', ') }}|{{ l | first }}|{{ l | last }}|{{ l | length }}|{{ 'ab' | list }}", {{"l", {1, 2, 3}}}),
            "1, 2, 3|1|3|3|['a', 'b']");
  EXPECT_EQ(render("{{ u | default('d') }}|{{ '' | default('e', true) }}|{{ '5' | int + 1 }}|{{ 5 | string }}|{{ 'hello world' | capitalize }}|{{ 'a b' | title }}"),
            "d|e|6|5|Hello world|A B");
  EXPECT_EQ(render("{{ d | items | list }}", {{"d", {{"a", 1}}}}), "[('a', 1)]");
  EXPECT_EQ(render("{{ 'x' | safe }}"), "x");
}

TEST(Jinja, ToJsonMatchesTransformers) {
  const json d = {{"b", "é\"\n"}, {"a", {1, 2.5, nullptr, true}}};
  EXPECT_EQ(render("{{ d | tojson }}", {{"d", d}}), R"({"a": [1, 2.5, null, true], "b": "é\"\n"})");
  EXPECT_EQ(render("{{ d | tojson(indent=2) }}", {{"d", {{"a", {1}}}}}), "{\n  \"a\": [\n    1\n  ]\n}");
  EXPECT_EQ(render("{{ 'é' | tojson(ensure_ascii=true) }}"), "\"\\u00e9\"");
  EXPECT_NE(error_of<InvalidArgumentError>("{{ u | tojson }}").find("not JSON serializable"), std::string::npos);
}

TEST(Jinja, Methods) {
  EXPECT_EQ(render("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxax'.strip('x') }}", {{"s", " a "}}), "a|a | a|a");
  EXPECT_EQ(render("{{ 'a<b<c'.split('<') }}|{{ 'a<b'.split('<')[-1] }}|{{ 'ab'.startswith('a') }}{{ 'ab'.endswith('a') }}"),
            "['a', 'b', 'c']|b|TrueFalse");
  EXPECT_EQ(render("{{ d.get('a') }}{{ d.get('z', 'dz') }}{{ d.keys() | list }}", {{"d", {{"a", 1}}}}), "1dz['a']");
  EXPECT_EQ(render("{{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'aa'.replace('a', 'b') }}{{ 'hi there'.title() }}"), "ABabbbHi There");
}

TEST(Jinja, GlobalsAndRaise) {
  EXPECT_EQ(render("{{ range(3) | list }}{{ range(1, 7, 2) | list }}"), "[0, 1, 2][1, 3, 5]");
  EXPECT_EQ(render("{{ strftime_now('%%') }}"), "%");
  EXPECT_EQ(render("{{ strftime_now('%Y') | length }}"), "4");
  const std::string err = error_of<InvalidArgumentError>("line1\n{{ raise_exception('Roles must alternate') }}");
  EXPECT_NE(err.find("Roles must alternate"), std::string::npos) << err;
  EXPECT_NE(err.find("line 2"), std::string::npos) << err;
}

TEST(Jinja, UndefinedSemantics) {
  EXPECT_EQ(render("{% if u %}y{% else %}n{% endif %}{{ u | length }}{% for x in u %}x{% endfor %}"), "n0");
  EXPECT_NE(error_of<InvalidArgumentError>("{{ u.attr }}").find("'u' is undefined"), std::string::npos);
  EXPECT_NE(error_of<InvalidArgumentError>("{{ u + 1 }}").find("undefined"), std::string::npos);
  EXPECT_EQ(render("{{ m.nope }}", {{"m", json::object()}}), "");
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  std::string err = error_of<FormatError>("ok\n{% if x %}\nno end");
  EXPECT_NE(err.find("t.jinja: line 3"), std::string::npos) << err;
  EXPECT_NE(err.find("endif"), std::string::npos) << err;
  err = error_of<FormatError>("{{ 1 + }}");
  EXPECT_NE(err.find("line 1, column 8"), std::string::npos) << err;
  EXPECT_NE(error_of<FormatError>("{{ 'abc }}").find("never closed"), std::string::npos);
  EXPECT_NE(error_of<FormatError>("{% endfor %}").find("unknown tag 'endfor'"), std::string::npos);
  EXPECT_NE(error_of<FormatError>("{% break %}").find("outside of a for loop"), std::string::npos);
  EXPECT_NE(error_of<FormatError>("{# never closed").find("comment"), std::string::npos);
  EXPECT_NE(error_of<FormatError>("{{ a ) }}").find("unexpected ')'"), std::string::npos);
}

TEST(Jinja, UnsupportedConstructsAreNamed) {
  std::string err = error_of<UnsupportedError>("a\nb\n  {% include 'x.html' %}");
  EXPECT_NE(err.find("'{% include %}'"), std::string::npos) << err;
  EXPECT_NE(err.find("line 3"), std::string::npos) << err;
  EXPECT_NE(err.find("--template"), std::string::npos) << err;
  err = error_of<UnsupportedError>("{{ x | urlize }}");
  EXPECT_NE(err.find("filter 'urlize'"), std::string::npos) << err;
  EXPECT_NE(error_of<UnsupportedError>("{{ x is escaped }}").find("test 'escaped'"), std::string::npos);
  EXPECT_NE(error_of<UnsupportedError>("{% for x in l recursive %}{% endfor %}").find("recursive"), std::string::npos);
  EXPECT_NE(error_of<UnsupportedError>("{{ '%s' % 1 }}").find("printf-style"), std::string::npos);
  EXPECT_NE(error_of<UnsupportedError>("{{ 'a'.format(1) }}").find("method 'format'"), std::string::npos);
}

TEST(Jinja, LimitsStopHostileTemplates) {
  EXPECT_NE(error_of<InvalidArgumentError>("{% for i in range(100000000) %}{% endfor %}").find("limit"), std::string::npos);
  Limits small;
  small.max_loop_iterations = 1000;
  EXPECT_NE(error_of<InvalidArgumentError>("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", {}, small)
                .find("loop iterations"),
            std::string::npos);
  small.max_output_bytes = 1000;
  EXPECT_NE(error_of<InvalidArgumentError>("{% for i in range(100) %}0123456789AB{% endfor %}", {}, small).find("exceeds"),
            std::string::npos);
  EXPECT_NE(error_of<InvalidArgumentError>("{{ 'x' * 100000000000 }}").find("exceeds"), std::string::npos);
  EXPECT_NE(error_of<InvalidArgumentError>("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
                .find("limit"),
            std::string::npos);
  // Deep nesting is refused at parse time instead of overflowing the stack.
  EXPECT_NE(error_of<UnsupportedError>("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nesting"),
            std::string::npos);
  std::string deep_ifs;
  for (int k = 0; k < 1000; ++k) deep_ifs += "{% if true %}";
  EXPECT_NE(error_of<UnsupportedError>(deep_ifs).find("nesting"), std::string::npos);
  EXPECT_NE(error_of<UnsupportedError>("{{ " + std::string(5000, '-') + "1 }}").find("nesting"), std::string::npos);
  // Runaway macro recursion is bounded.
  EXPECT_NE(error_of<InvalidArgumentError>("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("deeper"),
            std::string::npos);
}

TEST(Jinja, IntegerOverflowIsAnError) {
  EXPECT_NE(error_of<InvalidArgumentError>("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(error_of<InvalidArgumentError>("{{ 2 ** 64 }}").find("overflow"), std::string::npos);
  EXPECT_NE(error_of<UnsupportedError>("{{ 99999999999999999999 }}").find("64 bits"), std::string::npos);
}

}  // namespace
}  // namespace lathe::jinja
