// Constrained decoding through the engine on the tiny model. Its weights are random, so the
// text it writes is noise: every output that parses and validates shows the mask at work. The
// checks here are independent of the grammar code (nlohmann's JSON parser, a small schema
// validator, std::regex).
#include <regex>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "inference/chat/output_parser.h"
#include "inference/engine/engine.h"
#include "inference/grammar/spec.h"
#include "inference/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/engine/collector.h"
#include "tests/model/model_runner.h"

namespace qwen::grammar {
namespace {

using ::qwen::testing::Collector;

using Json = nlohmann::ordered_json;

// A JSON-schema validator for the subset the tests use, written apart from the compiler.
bool Valid(const Json& v, const Json& s, const Json& root, std::string* why) {
  auto fail = [&](const std::string& w) {
    *why = w + " in " + v.dump();
    return false;
  };
  if (s.contains("$ref")) {
    const std::string ref = s["$ref"];
    return Valid(v, root.at(Json::json_pointer(ref.substr(1))), root, why);
  }
  if (s.contains("anyOf")) {
    for (const Json& alt : s["anyOf"]) {
      if (Valid(v, alt, root, why)) return true;
    }
    return fail("no anyOf branch");
  }
  if (s.contains("enum")) {
    for (const Json& e : s["enum"]) {
      if (e == v) return true;
    }
    return fail("not in enum");
  }
  if (s.contains("const") && s["const"] != v) return fail("not const");
  if (!s.contains("type")) return true;
  std::vector<std::string> types;
  if (s["type"].is_string())
    types = {s["type"].get<std::string>()};
  else
    for (const Json& t : s["type"]) types.push_back(t);
  for (const std::string& t : types) {
    if (t == "null" && v.is_null()) return true;
    if (t == "boolean" && v.is_boolean()) return true;
    if (t == "integer" && v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (s.contains("minimum") && x < s["minimum"].get<double>()) return fail("below minimum");
      if (s.contains("maximum") && x > s["maximum"].get<double>()) return fail("above maximum");
      return true;
    }
    if (t == "number" && v.is_number()) {
      const double x = v.get<double>();
      if (s.contains("minimum") && x < s["minimum"].get<double>()) return fail("below minimum");
      if (s.contains("maximum") && x > s["maximum"].get<double>()) return fail("above maximum");
      if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) {
        return fail("not below exclusiveMaximum");
      }
      return true;
    }
    if (t == "string" && v.is_string()) {
      const std::string x = v;
      // Length in code points.
      size_t n = 0;
      for (unsigned char c : x) n += (c & 0xC0) != 0x80;
      if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return fail("too long");
      if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return fail("too short");
      if (s.contains("pattern") &&
          !std::regex_match(x, std::regex(s["pattern"].get<std::string>()))) {
        return fail("pattern");
      }
      return true;
    }
    if (t == "array" && v.is_array()) {
      if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>())
        return fail("few items");
      if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>())
        return fail("many items");
      if (s.contains("items")) {
        for (const Json& e : v) {
          if (!Valid(e, s["items"], root, why)) return false;
        }
      }
      return true;
    }
    if (t == "object" && v.is_object()) {
      if (s.contains("required")) {
        for (const Json& r : s["required"]) {
          if (!v.contains(r.get<std::string>())) return fail("missing " + r.get<std::string>());
        }
      }
      for (const auto& [k, x] : v.items()) {
        if (s.contains("properties") && s["properties"].contains(k)) {
          if (!Valid(x, s["properties"][k], root, why)) return false;
        } else if (s.contains("additionalProperties") && s["additionalProperties"].is_object()) {
          if (!Valid(x, s["additionalProperties"], root, why)) return false;
        } else if (!s.value("additionalProperties", !s.contains("properties"))) {
          return fail("extra property " + k);
        }
      }
      return true;
    }
  }
  return fail("wrong type");
}

class ConstrainedGenerationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = testing::LoadModel("models/tiny-qwen35-q3_k_m.gguf");
    ASSERT_NE(m.model, nullptr);
    file_ = new std::shared_ptr<const gguf::GgufFile>(m.file);
    model_ = new std::shared_ptr<model::Model>(std::move(m.model));
    auto tok = tokenizer::Tokenizer::FromGguf(*m.file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    cache_ = new GrammarCache(
        TokenTableFromTokenizer(*tokenizer_, static_cast<int32_t>((*model_)->config().n_vocab)));
    engine::EngineOptions o;
    o.n_slots = 4;
    o.n_ctx = 512;
    o.n_threads = 2;
    auto e = engine::Engine::Create(*model_, o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete cache_;
    delete tokenizer_;
    delete model_;
    delete file_;
  }

  struct Run {
    std::vector<int32_t> tokens;
    engine::FinishInfo info;
    std::string text;  // without the final stop token
  };

  // Runs `n` requests (seeds seed0..seed0+n-1, sampling settings varied) at once.
  std::vector<Run> Generate(const ConstraintSpec& spec, int n, uint64_t seed0, int max_tokens = 160,
                            bool stop_on_eog = true) {
    auto g = cache_->Get(spec);
    EXPECT_TRUE(g.ok()) << g.status();
    std::vector<std::shared_ptr<Collector>> sinks;
    const std::vector<int32_t> prompt = tokenizer_->Encode("Write some JSON:", true);
    for (int k = 0; k < n; ++k) {
      engine::GenerationRequest r;
      r.id = next_id_++;
      r.prompt = prompt;
      r.max_tokens = max_tokens;
      r.grammar = *g;
      if (stop_on_eog) r.stop_tokens = tokenizer_->end_of_generation_ids();
      r.sampling.seed = seed0 + k;
      // Every sampling setting combines with the mask.
      switch (k % 5) {
        case 0:
          break;
        case 1:
          r.sampling.temperature = 0;
          break;
        case 2:
          r.sampling.top_k = 5, r.sampling.temperature = 1.5f;
          break;
        case 3:
          r.sampling.top_p = 0.5f, r.sampling.min_p = 0.1f;
          break;
        case 4:
          r.sampling.repetition_penalty = 1.3f, r.sampling.presence_penalty = 0.5f;
          r.sampling.logit_bias = {{prompt[0], 5.0f}};
          break;
      }
      auto sink = std::make_shared<Collector>();
      EXPECT_TRUE(engine_->Submit(std::move(r), sink).ok());
      sinks.push_back(sink);
    }
    std::vector<Run> runs;
    for (auto& s : sinks) {
      EXPECT_TRUE(s->Wait(absl::Seconds(120)));
      Run run{s->tokens(), s->info(), ""};
      std::vector<int32_t> body = run.tokens;
      if (run.info.reason == engine::FinishReason::kStopToken && !body.empty()) body.pop_back();
      run.text = tokenizer_->Decode(body, /*show_control=*/true);
      runs.push_back(std::move(run));
    }
    return runs;
  }

  static std::shared_ptr<const gguf::GgufFile>* file_;
  static std::shared_ptr<model::Model>* model_;
  static tokenizer::Tokenizer* tokenizer_;
  static GrammarCache* cache_;
  static engine::Engine* engine_;
  uint64_t next_id_ = 1;
};

std::shared_ptr<const gguf::GgufFile>* ConstrainedGenerationTest::file_ = nullptr;
std::shared_ptr<model::Model>* ConstrainedGenerationTest::model_ = nullptr;
tokenizer::Tokenizer* ConstrainedGenerationTest::tokenizer_ = nullptr;
GrammarCache* ConstrainedGenerationTest::cache_ = nullptr;
engine::Engine* ConstrainedGenerationTest::engine_ = nullptr;

const char* const kSchemas[] = {
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},
        "age":{"type":"integer","minimum":0,"maximum":120},"member":{"type":"boolean"}},
        "required":["name","age"]})",
    R"({"type":"array","items":{"enum":["red","green","blue",7,null]},"minItems":1,"maxItems":4})",
    R"({"$defs":{"pt":{"type":"object","properties":{"x":{"type":"integer","minimum":-9,"maximum":9},
        "y":{"type":"number","minimum":-1,"maximum":1}},"required":["x","y"]}},
        "type":"object","properties":{"points":{"type":"array","items":{"$ref":"#/$defs/pt"},
        "maxItems":2},"label":{"anyOf":[{"type":"null"},{"type":"string","pattern":"^[a-z]{1,4}$"}]}},
        "required":["points","label"]})",
    R"({"type":"object","properties":{"id":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{3}$"},
        "tags":{"type":"object","additionalProperties":{"type":"integer","minimum":0,"maximum":99},
        "maxProperties":3}},"required":["id"]})",
};

TEST_F(ConstrainedGenerationTest, JsonSchemaOutputsParseAndValidate) {
  int total = 0, complete = 0;
  for (size_t i = 0; i < std::size(kSchemas); ++i) {
    Json schema = Json::parse(kSchemas[i]);
    if (i == 3) schema["properties"]["tags"].erase("maxProperties");  // not supported
    ConstraintSpec spec;
    spec.text = schema.dump();
    const int n = 40;
    for (const Run& r : Generate(spec, n, 1000 * i, /*max_tokens=*/300)) {
      ++total;
      if (r.info.reason == engine::FinishReason::kLength) continue;  // value not finished
      ASSERT_EQ(r.info.reason, engine::FinishReason::kStopToken) << r.info.status;
      ++complete;
      // Generation stopped when the value was complete: the text is exactly one JSON value.
      Json v = Json::parse(r.text, nullptr, false);
      ASSERT_FALSE(v.is_discarded()) << "schema " << i << ": " << r.text;
      std::string why;
      EXPECT_TRUE(Valid(v, schema, schema, &why)) << "schema " << i << ": " << why;
    }
  }
  EXPECT_EQ(total, 160);
  // Random weights may run out of tokens inside a long string; most values finish.
  EXPECT_GE(complete, 100);
  std::printf("%d of %d generations completed a value\n", complete, total);
}

TEST_F(ConstrainedGenerationTest, RegexAndChoices) {
  const char* const kRegexes[] = {R"([a-f]{3}-\d{2,4})", R"((yes|no|maybe)!?)",
                                  R"(\(\d{3}\) \d{3}-\d{4})",
                                  R"([A-Z][a-z]{0,5}( [A-Z][a-z]{0,5}){0,2})"};
  for (size_t i = 0; i < std::size(kRegexes); ++i) {
    ConstraintSpec spec;
    spec.kind = ConstraintSpec::Kind::kRegex;
    spec.text = kRegexes[i];
    for (const Run& r : Generate(spec, 30, 77 + i)) {
      ASSERT_EQ(r.info.reason, engine::FinishReason::kStopToken) << r.text;
      EXPECT_TRUE(std::regex_match(r.text, std::regex(kRegexes[i])))
          << kRegexes[i] << ": " << r.text;
    }
  }
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kChoices;
  spec.choices = {"positive", "negative", "neutral", "n/a"};
  for (const Run& r : Generate(spec, 40, 5)) {
    ASSERT_EQ(r.info.reason, engine::FinishReason::kStopToken);
    EXPECT_NE(std::find(spec.choices.begin(), spec.choices.end(), r.text), spec.choices.end())
        << r.text;
  }
}

TEST_F(ConstrainedGenerationTest, SameSeedSameOutput) {
  ConstraintSpec spec;
  spec.text = kSchemas[0];
  const auto a = Generate(spec, 10, 42);
  const auto b = Generate(spec, 10, 42);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(a[k].tokens, b[k].tokens) << k;
}

TEST_F(ConstrainedGenerationTest, EndsWhenCompleteWithoutStopTokens) {
  // No stop tokens: the engine ends the sequence itself once nothing can follow.
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kChoices;
  spec.choices = {"alpha", "beta"};
  for (const Run& r : Generate(spec, 8, 9, 64, /*stop_on_eog=*/false)) {
    EXPECT_EQ(r.info.reason, engine::FinishReason::kGrammarDone);
    EXPECT_TRUE(r.text == "alpha" || r.text == "beta") << r.text;
  }
}

TEST_F(ConstrainedGenerationTest, GbnfGrammar) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kGrammar;
  spec.text = R"g(root ::= "(" expr ")"
                 expr ::= num (("+" | "*") num){0,3}
                 num ::= [1-9] [0-9]?)g";
  const std::regex re(R"(\([1-9][0-9]?([+*][1-9][0-9]?){0,3}\))");
  for (const Run& r : Generate(spec, 30, 11)) {
    ASSERT_EQ(r.info.reason, engine::FinishReason::kStopToken);
    EXPECT_TRUE(std::regex_match(r.text, re)) << r.text;
  }
}

TEST_F(ConstrainedGenerationTest, ToolCallArgumentsValidate) {
  const Json tools = Json::parse(R"([{"type":"function","function":{"name":"get_weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":10},
      "days":{"type":"integer","minimum":1,"maximum":7},"unit":{"type":"string","enum":["c","f"]}},
      "required":["city","days"]}}},{"type":"function","function":{"name":"add",
      "parameters":{"type":"object","properties":{"a":{"type":"number","minimum":-100,"maximum":100},
      "b":{"type":"integer","minimum":0,"maximum":9}},"required":["a","b"]}}}])");
  for (bool required : {true, false}) {
    ConstraintSpec spec;
    spec.kind = ConstraintSpec::Kind::kToolCalls;
    spec.tools_json = tools.dump();
    spec.tool_calls_required = required;
    int calls = 0;
    for (const Run& r : Generate(spec, 30, 300, /*max_tokens=*/200)) {
      if (r.info.reason == engine::FinishReason::kLength) continue;
      chat::OutputParserOptions po;
      po.reasoning_open = false;
      po.tools = tools;
      const chat::ParsedOutput out = chat::OutputParser::Parse(r.text, po);
      if (required) {
        EXPECT_FALSE(out.tool_calls.empty()) << r.text;
      }
      for (const chat::ToolCall& c : out.tool_calls) {
        ++calls;
        ASSERT_TRUE(c.valid) << c.error << ": " << c.raw;
        const Json* fn = nullptr;
        for (const Json& t : tools) {
          if (t["function"]["name"] == c.name) fn = &t["function"];
        }
        ASSERT_NE(fn, nullptr) << c.name;
        std::string why;
        EXPECT_TRUE(Valid(c.arguments, (*fn)["parameters"], (*fn)["parameters"], &why))
            << why << ": " << c.raw;
      }
    }
    if (required) {
      EXPECT_GT(calls, 20);
    }
  }
}

TEST_F(ConstrainedGenerationTest, ConstraintStartsAfterReasoning) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kChoices;
  spec.choices = {"yes", "no"};
  spec.after_reasoning = true;
  // Random weights rarely close </think> on their own; bias that token so they do.
  auto g = cache_->Get(spec);
  ASSERT_TRUE(g.ok());
  const int32_t close = tokenizer_->PieceToId("</think>");
  ASSERT_GE(close, 0);
  // Seeds until six reasoning blocks closed and answered (how many seeds that takes depends on
  // the kernels' rounding: 5 of the first 20 at the AVX2 level, more at AVX-512's).
  int finished = 0;
  for (int k = 0; k < 60 && finished <= 5; ++k) {
    engine::GenerationRequest r;
    r.id = 100000 + k;
    r.prompt = tokenizer_->Encode("<think>\n", true);
    r.max_tokens = 64;
    r.grammar = *g;
    r.stop_tokens = tokenizer_->end_of_generation_ids();
    r.sampling.seed = k;
    r.sampling.logit_bias = {{close, 8.0f}};
    auto sink = std::make_shared<Collector>();
    ASSERT_TRUE(engine_->Submit(std::move(r), sink).ok());
    ASSERT_TRUE(sink->Wait(absl::Seconds(120)));
    if (sink->info().reason != engine::FinishReason::kStopToken) continue;
    ++finished;
    std::vector<int32_t> body = sink->tokens();
    body.pop_back();
    const std::string text = tokenizer_->Decode(body, true);
    const size_t end = text.find("</think>");
    ASSERT_NE(end, std::string::npos) << text;
    std::string answer = text.substr(end + 8);
    while (!answer.empty() && answer[0] == '\n') answer.erase(0, 1);
    EXPECT_TRUE(answer == "yes" || answer == "no") << text;
  }
  EXPECT_GT(finished, 5);
}

}  // namespace
}  // namespace qwen::grammar
