// The grammar compilers and the matcher: languages accepted and rejected, errors naming the
// construct, and token masks equal to a brute-force check over a vocabulary.
#include <random>

#include "gtest/gtest.h"
#include "inference/grammar/compile.h"
#include "inference/grammar/matcher.h"
#include "inference/grammar/spec.h"
#include "nlohmann/json.hpp"

namespace qwen::grammar {
namespace {

using Json = nlohmann::ordered_json;

// A vocabulary of all single bytes plus some multi-byte pieces: enough for any text.
std::shared_ptr<const TokenTable> SmallVocab() {
  std::vector<std::string> t;
  for (int b = 0; b < 256; ++b) t.push_back(std::string(1, static_cast<char>(b)));
  for (const char* s :
       {"\"",         "\":",         "\", \"", "{\"", "\"}",          "true",        "false",
        "null",       "12",          "123",    "abc", "ab",           ", ",          ": ",
        "red",        "green",       "\\n",    "\\u", "00",           "<tool_call>", "</think>",
        "<function=", "<parameter=", ">\n",    "\n",  "</parameter>", "get_weather", "city",
        "é",          "日本",        "\xe6",   "-1"}) {
    t.push_back(s);
  }
  std::vector<bool> usable(t.size(), true);
  t.push_back("<|im_end|>");
  usable.push_back(false);
  return std::make_shared<TokenTable>(std::move(t), std::move(usable));
}

std::shared_ptr<CompiledGrammar> Compile(const absl::StatusOr<Grammar>& g) {
  EXPECT_TRUE(g.ok()) << g.status();
  auto c = CompiledGrammar::Create(*g, SmallVocab());
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

bool Matches(const std::shared_ptr<CompiledGrammar>& c, absl::string_view text) {
  Matcher m(c);
  return m.AcceptBytes(text) && m.CanEnd();
}
bool IsPrefix(const std::shared_ptr<CompiledGrammar>& c, absl::string_view text) {
  Matcher m(c);
  return m.AcceptBytes(text);
}

absl::StatusOr<Grammar> Schema(const char* json) { return JsonSchemaGrammar(Json::parse(json)); }

TEST(Regex, AcceptsAndRejects) {
  auto c = Compile(RegexGrammar(R"(^[a-c]{2,3}(x|yz)*\d+\.?$)"));
  EXPECT_TRUE(Matches(c, "ab1"));
  EXPECT_TRUE(Matches(c, "abcxyzx42."));
  EXPECT_FALSE(Matches(c, "a1"));
  EXPECT_FALSE(Matches(c, "abcd1"));
  EXPECT_FALSE(Matches(c, "ab"));
  EXPECT_TRUE(IsPrefix(c, "ab"));
  EXPECT_FALSE(IsPrefix(c, "abq"));
}

TEST(Regex, UnicodeClassesAndDot) {
  auto c = Compile(RegexGrammar("[^a]é.[日-本]"));
  EXPECT_TRUE(Matches(c, "bé日本"));
  EXPECT_TRUE(Matches(c, "日éx日"));
  EXPECT_FALSE(Matches(c, "aéx日"));
  EXPECT_FALSE(Matches(c, "bé\n日"));
}

TEST(Regex, RejectsUnsupportedConstructsByName) {
  for (auto [re, what] :
       std::vector<std::pair<const char*, const char*>>{{"a(?=b)", "lookahead"},
                                                        {"(a)\\1", "backreferences"},
                                                        {"\\bfoo", "word boundary"},
                                                        {"a{3,1}", "repetition"},
                                                        {"(ab", "unclosed ("},
                                                        {"*a", "nothing to repeat"}}) {
    auto g = RegexGrammar(re);
    ASSERT_FALSE(g.ok()) << re;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(what), std::string::npos) << g.status();
  }
}

TEST(Choices, ExactlyOne) {
  auto c = Compile(ChoicesGrammar({"red", "green", "gr"}));
  EXPECT_TRUE(Matches(c, "red"));
  EXPECT_TRUE(Matches(c, "gr"));
  EXPECT_TRUE(Matches(c, "green"));
  EXPECT_FALSE(Matches(c, "blue"));
  EXPECT_FALSE(Matches(c, "redd"));
  EXPECT_FALSE(ChoicesGrammar({}).ok());
}

TEST(Gbnf, ParsesAndMatches) {
  auto c = Compile(GbnfGrammar(R"(
    # a list of numbers
    root ::= "[" ( num ( "," ws num )* )? "]"
    num  ::= "-"? [0-9]+
    ws   ::= [ ]?
  )"));
  EXPECT_TRUE(Matches(c, "[]"));
  EXPECT_TRUE(Matches(c, "[1,-22, 3]"));
  EXPECT_FALSE(Matches(c, "[1,]"));
  EXPECT_FALSE(Matches(c, "[a]"));
}

TEST(Gbnf, Errors) {
  EXPECT_NE(GbnfGrammar("root ::= value").status().message().find("undefined rule \"value\""),
            std::string::npos);
  EXPECT_NE(GbnfGrammar("x ::= \"a\"").status().message().find("no \"root\""), std::string::npos);
  EXPECT_NE(GbnfGrammar("root ::= root \"a\" | \"b\"").status().message().find("left-recursive"),
            std::string::npos);
  EXPECT_NE(GbnfGrammar("root ::= \"a").status().message().find("unclosed string"),
            std::string::npos);
}

TEST(JsonSchema, ObjectWithRequiredAndOptional) {
  auto c = Compile(Schema(R"({"type":"object","properties":{
      "name":{"type":"string","maxLength":5},
      "age":{"type":"integer","minimum":0,"maximum":120},
      "ok":{"type":"boolean"}},"required":["name"]})"));
  EXPECT_TRUE(Matches(c, R"({"name": "abc"})"));
  EXPECT_TRUE(Matches(c, R"({"name": "abc", "age": 42, "ok": true})"));
  EXPECT_TRUE(Matches(c, R"({"name": "", "ok": false})"));
  EXPECT_FALSE(Matches(c, R"({"age": 42})"));
  EXPECT_FALSE(Matches(c, R"({"name": "abcdef"})"));
  EXPECT_FALSE(Matches(c, R"({"name": "a", "age": 121})"));
  EXPECT_FALSE(Matches(c, R"({"name": "a", "age": 007})"));
  EXPECT_FALSE(Matches(c, R"({"name": "a", "extra": 1})"));
}

TEST(JsonSchema, NumbersWithBounds) {
  auto c = Compile(Schema(R"({"type":"number","minimum":-2.5,"exclusiveMaximum":3})"));
  // Fractions are kept strictly inside whole-number bounds (a subset of the valid values).
  for (const char* ok : {"0", "-2", "-1.5", "2.999", "0.5", "-0.1", "2"}) {
    EXPECT_TRUE(Matches(c, ok)) << ok;
  }
  for (const char* bad : {"3", "-3", "3.1", "-2.6", "10", "01"})
    EXPECT_FALSE(Matches(c, bad)) << bad;
  auto i = Compile(Schema(R"({"type":"integer","minimum":-15,"maximum":1234})"));
  for (int v = -20; v <= 1300; ++v) {
    EXPECT_EQ(Matches(i, std::to_string(v)), v >= -15 && v <= 1234) << v;
  }
}

TEST(JsonSchema, ArraysEnumsRefsAnyOf) {
  auto c = Compile(Schema(R"({"$defs":{"color":{"enum":["red","green",1,null]}},
      "type":"array","items":{"anyOf":[{"$ref":"#/$defs/color"},{"type":"null"}]},
      "minItems":1,"maxItems":3})"));
  EXPECT_TRUE(Matches(c, R"(["red"])"));
  EXPECT_TRUE(Matches(c, R"(["red", 1, null])"));
  EXPECT_FALSE(Matches(c, R"([])"));
  EXPECT_FALSE(Matches(c, R"(["red", 1, null, null])"));
  EXPECT_FALSE(Matches(c, R"(["blue"])"));
}

TEST(JsonSchema, RecursiveRefAndAnyValue) {
  auto c = Compile(Schema(R"({"$defs":{"node":{"type":"object","properties":{
      "v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},
      "required":["v"]}},"$ref":"#/$defs/node"})"));
  EXPECT_TRUE(Matches(c, R"({"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": []}]})"));
  EXPECT_FALSE(Matches(c, R"({"v": 1, "kids": [{}]})"));
  auto any = Compile(Schema("{}"));
  EXPECT_TRUE(Matches(any, R"({"a": [1, 2.5e3, "x\n", true, null, {}]})"));
}

TEST(JsonSchema, StringFormatsAndPatterns) {
  auto c = Compile(Schema(R"({"type":"object","properties":{
      "d":{"type":"string","format":"date"},
      "p":{"type":"string","pattern":"^a\"[0-9]{2}$"}},"required":["d","p"]})"));
  EXPECT_TRUE(Matches(c, R"({"d": "2024-02-29", "p": "a\"12"})"));
  EXPECT_FALSE(Matches(c, R"({"d": "2024-13-01", "p": "a\"12"})"));
  EXPECT_FALSE(Matches(c, R"({"d": "2024-01-01", "p": "a"12"})"));
}

TEST(JsonSchema, UnsupportedConstructsAreNamed) {
  struct Case {
    const char* schema;
    const char* message;
  };
  for (const Case& k : std::vector<Case>{
           {R"({"type":"object","properties":{"x":{"type":"object","patternProperties":{}}}})",
            "unsupported keyword \"patternProperties\" at #/properties/x"},
           {R"({"not":{}})", "unsupported keyword \"not\" at #"},
           {R"({"type":"string","format":"hostname"})", "unsupported format \"hostname\" at #"},
           {R"({"$ref":"http://x/y"})", "is not local"},
           {R"({"$ref":"#/$defs/missing"})", "does not resolve"},
           {R"({"type":"thing"})", "unknown type \"thing\""},
           {R"({"allOf":[{},{}]})", "allOf"},
           {R"({"type":"number","minimum":0.2,"maximum":0.8})", "number bounds"},
           {R"j({"type":"string","pattern":"(?!x)"})j", "lookahead"}}) {
    auto g = Schema(k.schema);
    ASSERT_FALSE(g.ok()) << k.schema;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(k.message), std::string::npos)
        << g.status() << " / " << k.message;
  }
}

TEST(ToolCalls, RequiredCallsValidateArguments) {
  Json tools = Json::parse(R"([{"type":"function","function":{"name":"get_weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string"},
      "days":{"type":"integer","minimum":1,"maximum":7}},"required":["city"]}}}])");
  auto c = Compile(ToolCallGrammar(tools, /*required=*/true));
  const std::string call =
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>";
  EXPECT_TRUE(Matches(c, call));
  EXPECT_TRUE(Matches(c, call + "\n" + call));
  EXPECT_FALSE(Matches(c, "hi" + call));
  EXPECT_FALSE(Matches(c, "<tool_call>\n<function=get_weather>\n</function>\n</tool_call>"));
  EXPECT_FALSE(Matches(c,
                       "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
                       "</parameter>\n<parameter=days>\n9\n</parameter>\n</function>\n"
                       "</tool_call>"));
  auto a = Compile(ToolCallGrammar(tools, /*required=*/false));
  EXPECT_TRUE(Matches(a, "Let me check. <tool_call"));  // text that only looks like a start
  EXPECT_TRUE(Matches(a, "Let me check.\n" + call));
  EXPECT_FALSE(Matches(a, "x<tool_call>\n<function=other>\n"));
}

TEST(Reasoning, ConstraintStartsAfterThink) {
  auto g = ChoicesGrammar({"yes", "no"});
  ASSERT_TRUE(g.ok());
  PrefixWithReasoning(&*g);
  auto c = Compile(*g);
  EXPECT_TRUE(Matches(c, "Hmm </thin < think> yes?</think>\n\nyes"));
  EXPECT_TRUE(Matches(c, "</think>no"));
  EXPECT_FALSE(Matches(c, "</think>\n\nmaybe"));
  EXPECT_FALSE(Matches(c, "yes"));
}

// The mask of every state along random walks equals checking every token by hand.
TEST(Matcher, MaskEqualsBruteForce) {
  const std::vector<absl::StatusOr<Grammar>> grammars = {
      Schema(R"({"type":"object","properties":{"a":{"type":"string","maxLength":4},
          "b":{"type":"array","items":{"type":"integer","minimum":-5,"maximum":200}},
          "c":{"enum":["red","green"]}},"required":["a","c"]})"),
      Schema("{}"), RegexGrammar("(ab|abc)+[0-9]{1,3}"), ChoicesGrammar({"red", "green", "gr"}),
      ToolCallGrammar(Json::parse(R"([{"name":"get_weather","parameters":{"type":"object",
          "properties":{"city":{"type":"string","maxLength":8}},"required":["city"]}}])"),
                      false)};
  std::mt19937 rng(7);
  for (size_t gi = 0; gi < grammars.size(); ++gi) {
    auto c = Compile(grammars[gi]);
    const TokenTable& t = c->tokens();
    for (int walk = 0; walk < 20; ++walk) {
      Matcher m(c);
      for (int step = 0; step < 40; ++step) {
        std::vector<uint64_t> mask(c->mask_words());
        m.FillNextTokenMask(mask.data());
        std::vector<int32_t> allowed;
        for (int32_t id = 0; id < t.size(); ++id) {
          Matcher probe = m;
          const bool brute = probe.AcceptToken(id);
          const bool bit = (mask[id >> 6] >> (id & 63)) & 1;
          ASSERT_EQ(bit, brute) << "grammar " << gi << " token " << id << " '" << t.bytes(id)
                                << "'";
          if (bit) allowed.push_back(id);
        }
        if (allowed.empty()) {
          EXPECT_TRUE(m.CanEnd());
          break;
        }
        if (m.CanEnd() && rng() % 8 == 0) break;
        ASSERT_TRUE(m.AcceptToken(allowed[rng() % allowed.size()]));
      }
    }
  }
}

TEST(Spec, CacheCompilesOnceAndPrefixesErrors) {
  GrammarCache cache(SmallVocab());
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kRegex;
  spec.text = "a+";
  auto a = cache.Get(spec);
  auto b = cache.Get(spec);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->get(), b->get());
  spec.text = "a(?=b)";
  auto bad = cache.Get(spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().substr(0, 7), "regex: ");
}

}  // namespace
}  // namespace qwen::grammar
