#include "inference/chat/jinja.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qwen::chat::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> Render(const std::string& source, const std::string& json = "{}",
                                   const Options& options = Options()) {
  auto t = Template::Parse(source, options);
  if (!t.ok()) return t.status();
  auto context = Value::FromJson(nlohmann::ordered_json::parse(json));
  if (!context.ok()) return context.status();
  return (*t)->Render(*context);
}

std::string R(const std::string& source, const std::string& json = "{}") {
  auto r = Render(source, json);
  return r.ok() ? *r : "ERROR: " + std::string(r.status().message());
}

TEST(JinjaTest, TextAndExpressions) {
  EXPECT_EQ(R("Hello {{ name }}!", R"({"name":"World"})"), "Hello World!");
  EXPECT_EQ(R("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}"),
            "7 3 -4 1 2 1024");
  EXPECT_EQ(R("{{ 7 / 2 }} {{ 1.0 }} {{ 1e-6 }} {{ 0.1 + 0.2 }} {{ 1e16 }}"),
            "3.5 1.0 1e-06 0.30000000000000004 1e+16");
  EXPECT_EQ(R("{{ 'a' ~ 1 ~ none ~ true }}"), "a1NoneTrue");
  EXPECT_EQ(R("{{ [1, 'a', none, true, {'k': 'v'}] }}"), "[1, 'a', None, True, {'k': 'v'}]");
  EXPECT_EQ(R("{{ undefined_thing }}|"), "|");
  EXPECT_EQ(R("{{ 'yes' if x else 'no' }} {{ 'yes' if not x else 'no' }}", R"({"x":0})"), "no yes");
  EXPECT_EQ(R("{{ x or 'd' }} {{ x and 'd' }}", R"({"x":""})"), "d ");
  EXPECT_EQ(R("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'b' in 'abc' }} {{ 2 not in [1] }}"),
            "True False True True");
  EXPECT_EQ(R(R"({{ "a\nb\t\u00e9\"" }})"), "a\nb\té\"");
}

TEST(JinjaTest, WhitespaceControlAndHuggingFaceTrimming) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(R("{% if true %}\n  yes\n  {% endif %}\nend"), "  yes\nend");
  EXPECT_EQ(R("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(R("a {{- 'b' -}} c"), "abc");
  EXPECT_EQ(R("{# comment #}\nx"), "x");
  EXPECT_EQ(R("a {# c #} b"), "a  b");
  EXPECT_EQ(R("x\n"), "x");  // one trailing newline dropped
  EXPECT_EQ(R("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
  EXPECT_EQ(R("{{ x }}   {% if true %}y{% endif %}", R"({"x":1})"), "1   y");
}

TEST(JinjaTest, Loops) {
  EXPECT_EQ(R("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
              R"({"xs":["a","b","c"]})"),
            "1a,2b,3c");
  EXPECT_EQ(R("{% for x in xs[::-1] %}{{ x }}{% endfor %}|{{ xs[1:] }}|{{ xs[-1] }}",
              R"({"xs":[1,2,3]})"),
            "321|[2, 3]|3");
  EXPECT_EQ(R("{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", R"({"d":{"b":1,"a":2}})"),
            "b=1;a=2;");
  EXPECT_EQ(R("{% for k in d %}{{ k }}{% endfor %}", R"({"d":{"x":1,"y":2}})"), "xy");
  EXPECT_EQ(R("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in [1,2,3,4] if x is even %}{{ x }}{% endfor %}"), "24");
  EXPECT_EQ(R("{% for x in [1,2,3,4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "12");
  EXPECT_EQ(R("{% for x in [1,2,3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(R("{% for x in [1,2] %}{{ loop.previtem is defined }}{{ loop.cycle('a','b') }}{% endfor %}"),
            "FalseaTrueb");
  EXPECT_EQ(R("{% for x in missing %}a{% endfor %}ok"), "ok");
}

TEST(JinjaTest, ScopingSetAndNamespace) {
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(R("{% set ns = namespace(x=1) %}{% for i in [1,2] %}{% set ns.x = ns.x + i %}"
              "{% endfor %}{{ ns.x }}"),
            "4");
  EXPECT_EQ(R("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(R("{% set block %}inner {{ 1 }}{% endset %}[{{ block }}]"), "[inner 1]");
  EXPECT_THAT(R("{% set d = {} %}{% set d.x = 1 %}"), HasSubstr("non-namespace"));
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(R("{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}"
              "{{ m(1) }}|{{ m(1, 2) }}|{{ m(1, c=3) }}"),
            "1BNone|12None|1B3");
  EXPECT_EQ(R("{% macro m() %} x {% endmacro %}[{{ m()|trim }}]"), "[x]");
  // Macros see top-level names, not their caller's loop variables.
  EXPECT_EQ(R("{% set g = 'G' %}{% macro m() %}{{ g }}{{ i }}{% endmacro %}"
              "{% for i in [1] %}{{ m() }}{% endfor %}"),
            "G");
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(R("{{ '  a b  '|trim }}|{{ 'Ab'|upper }}{{ 'Ab'|lower }}|{{ [1,2]|length }}"
              "{{ 'héllo'|length }}|{{ 3|string }}"),
            "a b|ABab|25|3");
  EXPECT_EQ(R("{{ x|tojson }}", R"({"x":{"b":[1,2.5,"é\n",null,true],"a":{}}})"),
            R"({"b": [1, 2.5, "é\n", null, true], "a": {}})");
  EXPECT_EQ(R("{{ x|tojson(indent=2) }}", R"({"x":{"a":[1]}})"), "{\n  \"a\": [\n    1\n  ]\n}");
  EXPECT_EQ(R("{{ x|tojson(sort_keys=true) }}", R"({"x":{"b":1,"a":2}})"), R"({"a": 2, "b": 1})");
  EXPECT_EQ(R("{{ missing|default('d') }}{{ ''|default('e', true) }}"), "de");
  EXPECT_EQ(R("{{ [3,1,2]|sort|join(',') }} {{ [1,2]|first }}{{ [1,2]|last }} {{ [1,1,2]|unique|list }}"),
            "1,2,3 12 [1, 2]");
  EXPECT_EQ(R("{{ xs|map(attribute='n')|join }} {{ xs|selectattr('n', 'gt', 1)|list|length }}",
              R"({"xs":[{"n":1},{"n":2},{"n":3}]})"),
            "123 2");
  EXPECT_EQ(R("{{ 'a-b-c'|replace('-', '+') }} {{ '42'|int + 1 }} {{ 'x'|int }} {{ -3|abs }}"),
            "a+b+c 43 0 3");
  EXPECT_EQ(R("{{ 'a\nb'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}"), "a\n  b|  a\n  b");
  EXPECT_THAT(R("{{ 1|nosuchfilter }}"), HasSubstr("unknown filter 'nosuchfilter'"));
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(R("{{ x is string }}{{ x is mapping }}{{ y is mapping }}{{ z is none }}"
              "{{ w is defined }}{{ y is iterable }}{{ x is sequence }}{{ l is sequence }}",
              R"({"x":"s","y":{},"z":null,"l":[]})"),
            "TrueFalseTrueTrueFalseTrueTrueTrue");
  EXPECT_EQ(R("{{ f is false }}{{ f is true }}{{ 0 is false }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}"
              "{{ x is not none }}",
              R"({"f":false,"x":1})"),
            "TrueFalseFalseTrueTrueTrue");
  EXPECT_THAT(R("{{ x is nosuchtest }}"), HasSubstr("unknown test"));
}

TEST(JinjaTest, StringMethods) {
  EXPECT_EQ(R("{{ s.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}",
              R"({"s":"<think>\nreason\n</think>\n\nanswer"})"),
            "reason");
  EXPECT_EQ(R("{{ s.startswith('ab') }}{{ s.endswith(('x', 'cd')) }}{{ s.upper() }}"
              "{{ ' a  b '.split() }}{{ 'a,b,,c'.split(',', 1) }}{{ s.replace('b', 'B') }}",
              R"({"s":"abcd"})"),
            "TrueTrueABCD['a', 'b']['a', 'b,,c']aBcd");
  EXPECT_EQ(R("{{ d.get('a') }}{{ d.get('z', 'def') }}{{ d.keys()|list }}{{ d['a'] }}{{ d.a }}",
              R"({"d":{"a":1}})"),
            "1def['a']11");
  EXPECT_EQ(R("{{ ', '.join(['a', 'b']) }}|{{ 'héllo'[1] }}|{{ 'héllo'[::-1] }}"), "a, b|é|olléh");
}

TEST(JinjaTest, RaiseExceptionGivesItsMessage) {
  auto r = Render("{{ raise_exception('Bad input: ' ~ x) }}", R"({"x":3})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "Bad input: 3");
  EXPECT_TRUE(IsRaisedByTemplate(r.status()));
}

TEST(JinjaTest, ErrorsNameTheLine) {
  auto r = Render("ok\n{{ x.y.z }}");
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsRaisedByTemplate(r.status()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("line 2"));
  EXPECT_THAT(R("{{ 'a' + 1 }}"), HasSubstr("unsupported operand"));
  EXPECT_THAT(R("{% if x %}"), HasSubstr("endif"));
  EXPECT_THAT(R("{{ (1 }}"), HasSubstr("syntax error"));
  EXPECT_THAT(R("{{ (1] }}"), HasSubstr("expected ')'"));
  EXPECT_THAT(R("{% for x in y %}{% endif %}"), HasSubstr("syntax error"));
  EXPECT_THAT(R("{% break %}"), HasSubstr("outside a loop"));
  EXPECT_THAT(R("{{ 'unterminated }}"), HasSubstr("unterminated"));
}

TEST(JinjaTest, LimitsStopRunawayTemplates) {
  Options small;
  small.limits.max_loop_iterations = 1000;
  small.limits.max_output_bytes = 1 << 16;
  auto loops = Render("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
                      "{}", small);
  EXPECT_EQ(loops.status().code(), absl::StatusCode::kResourceExhausted);
  auto output = Render("{% for i in range(900) %}{{ 'x' * 1000 }}{% endfor %}", "{}", small);
  EXPECT_EQ(output.status().code(), absl::StatusCode::kResourceExhausted);
  auto recursion = Render("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}");
  EXPECT_EQ(recursion.status().code(), absl::StatusCode::kResourceExhausted);
  auto deep = Render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}");
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kResourceExhausted);
  auto nested = Render(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}");
  EXPECT_FALSE(nested.ok());
  auto cycle = Render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns.me.me.me }}|{{ [ns] }}");
  ASSERT_TRUE(cycle.ok()) << cycle.status();
  auto huge_range = Render("{{ range(10000000000)|length }}");
  EXPECT_EQ(huge_range.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace qwen::chat::jinja
