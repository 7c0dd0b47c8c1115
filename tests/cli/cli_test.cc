// `qwen inspect` and `qwen generate`, run as a user would.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/fake_ollama_store.h"
#include "tests/common/test_util.h"
#include "tests/model/reference_data.h"

namespace qwen::testing {
namespace {

std::string Qwen() { return BinPath("qwen"); }

void WriteFile(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

TEST(Inspect, PrintsMetadataTensorsAndTotals) {
  CommandResult r = RunCommand(Qwen() + " inspect " + DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  ASSERT_EQ(r.status, 0);
  EXPECT_TRUE(absl::StrContains(r.out, "general.architecture"));
  EXPECT_TRUE(absl::StrContains(r.out, "\"qwen35\""));
  EXPECT_TRUE(absl::StrContains(r.out, "more]"));  // long arrays are shortened
  EXPECT_TRUE(absl::StrContains(r.out, "blk.3.attn_q.weight"));
  EXPECT_TRUE(absl::StrContains(r.out, "q3_K"));
  EXPECT_TRUE(absl::StrContains(r.out, "total"));
}

TEST(Inspect, JsonHasMetadataTensorsAndBytesByType) {
  CommandResult r =
      RunCommand(Qwen() + " inspect --json " + DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  ASSERT_EQ(r.status, 0);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["metadata"]["general.architecture"], "qwen35");
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"].size(), 1024u);
  ASSERT_EQ(j["tensors"].size(), 108u);
  const auto& t = j["tensors"][1];
  EXPECT_EQ(t["name"], "token_embd.weight");
  EXPECT_EQ(t["type"], "q6_K");
  EXPECT_EQ(t["ne"], nlohmann::json({256, 1024}));
  EXPECT_EQ(t["bytes"], 215040);
  EXPECT_EQ(t["offset"], 42208);
  uint64_t sum = 0;
  for (const auto& [type, bytes] : j["bytes_by_type"].items()) sum += bytes.get<uint64_t>();
  uint64_t tensors = 0;
  for (const auto& x : j["tensors"]) tensors += x["bytes"].get<uint64_t>();
  EXPECT_EQ(sum, tensors);
}

// Every fixture's full description, against the expected text in tests/data/inspect/ (the
// metadata, layout, tensor table and totals; reviewed when they were written). After a change
// to the output that is meant, rewrite them with
//   (cd tests/data && for f in ...; do ../../build/bin/qwen inspect $f > inspect/NAME.txt; done)
// and read the diff.
TEST(Inspect, ReadsEveryFixture) {
  const std::pair<const char*, const char*> cases[] = {
      {"models/tiny-qwen35-f32.gguf", "inspect/tiny-qwen35-f32.txt"},
      {"models/tiny-qwen35-mtp-q3_k_m.gguf", "inspect/tiny-qwen35-mtp-q3_k_m.txt"},
      {"models/tiny-qwen35-ollama-q3_k_m.gguf", "inspect/tiny-qwen35-ollama-q3_k_m.txt"},
      {"models/mmproj-tiny-qwen35-f16.gguf", "inspect/mmproj-tiny-qwen35-f16.txt"},
      {"tokenizer/qwen3-vocab-qwen35pre.gguf", "inspect/qwen3-vocab-qwen35pre.txt"}};
  for (const auto& [file, expected] : cases) {
    // From the data folder, so that the "file:" line is the same relative path everywhere.
    CommandResult r =
        RunCommand(absl::StrCat("cd '", DataPath(""), "' && ", Qwen(), " inspect ", file, " 2>&1"));
    ASSERT_EQ(r.status, 0) << file << ": " << r.out;
    const std::string want = ReadFile(DataPath(expected));
    ASSERT_FALSE(want.empty()) << expected;
    EXPECT_EQ(r.out, want) << file;
  }
}

// A broken file: exit 2 and one line on stderr naming the problem and the byte offset.
TEST(Inspect, TruncatedFilesExitTwoWithOneLine) {
  const std::string bytes = ReadFile(DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  const std::string path = ::testing::TempDir() + "/truncated.gguf";
  for (size_t cut : {size_t{0}, size_t{3}, size_t{10}, size_t{100}, size_t{5000}, size_t{41000},
                     bytes.size() / 2, bytes.size() - 1}) {
    WriteFile(path, bytes.substr(0, cut));
    CommandResult r = RunCommand(Qwen() + " inspect " + path + " 2>&1 >/dev/null");
    EXPECT_EQ(r.status, 2) << "cut " << cut;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, "byte")) << r.out;
  }
  std::string flipped = bytes;
  flipped[0] = 'X';
  WriteFile(path, flipped);
  CommandResult r = RunCommand(Qwen() + " inspect " + path + " 2>&1 >/dev/null");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "magic")) << r.out;
}

TEST(Inspect, NamesTheLayout) {
  CommandResult r = RunCommand(Qwen() + " inspect " + DataPath("models/tiny-qwen35-q3_k_m.gguf"));
  EXPECT_TRUE(absl::StrContains(r.out, "layout:    llama.cpp\n")) << r.out;
  r = RunCommand(Qwen() + " inspect --json " + DataPath("models/tiny-qwen35-ollama-q3_k_m.gguf"));
  EXPECT_EQ(nlohmann::json::parse(r.out)["layout"], "ollama");
}

// `--model ollama:NAME:TAG` finds the blob in Ollama's store; its logits are those of the same
// weights in llama.cpp's layout, bit for bit.
TEST(Ollama, InspectAndGenerateResolveOllamaNames) {
  FakeOllamaStore store(::testing::TempDir());
  store.AddManifest(
      "registry.ollama.ai/library/qwen3.5/4b",
      {store.AddBlob(DataPath("models/tiny-qwen35-ollama-q3_k_m.gguf"), kOllamaModelMedia)});
  const std::string env = absl::StrCat("OLLAMA_MODELS='", store.dir(), "' ");
  CommandResult r = RunCommand(env + Qwen() + " inspect ollama:qwen3.5:4b");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "file:      " + store.dir() + "/blobs/sha256-")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "layout:    ollama")) << r.out;

  const std::string args =
      " --tokens 1,2,3,40,50,60,700 --teacher-force 5,6,7,8,9 --threads 1 --dump-logits ";
  const std::string ours = ::testing::TempDir() + "/ollama.f32";
  const std::string theirs = ::testing::TempDir() + "/llama.f32";
  r = RunCommand(env + Qwen() + " generate --model ollama:qwen3.5:4b" + args + ours + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  r = RunCommand(Qwen() + " generate --model " + DataPath("models/tiny-qwen35-q3_k_m.gguf") + args +
                 theirs + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string a = ReadFile(ours);
  EXPECT_EQ(a.size(), 12u * 1024 * sizeof(float));
  EXPECT_TRUE(a == ReadFile(theirs));

  // Its bundled vision tower takes images without --mmproj, as the separate F16 mmproj does.
  const std::string chat = ::testing::TempDir() + "/image-chat.json";
  WriteFile(chat, R"({"messages":[{"role":"user","content":[{"type":"image"},)"
                  R"({"type":"text","text":"Describe this."}]}]})");
  const std::string image_args = " --chat " + chat + " --image " +
                                 DataPath("vision/img_128x128.png") +
                                 " --temperature 0 --max-tokens 6 --threads 1 --dump-logits ";
  r = RunCommand(env + Qwen() + " generate --model ollama:qwen3.5:4b" + image_args + ours +
                 " 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  r = RunCommand(Qwen() + " generate --model " + DataPath("models/tiny-qwen35-q3_k_m.gguf") +
                 " --mmproj " + DataPath("models/mmproj-tiny-qwen35-f16.gguf") + image_args +
                 theirs + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string bundled = ReadFile(ours), separate = ReadFile(theirs);
  ASSERT_EQ(bundled.size(), separate.size());
  ASSERT_GT(bundled.size(), 16u * 1024 * sizeof(float));  // the image's 16 rows at least
  const float* x = reinterpret_cast<const float*>(bundled.data());
  const float* y = reinterpret_cast<const float*>(separate.data());
  float max_diff = 0;
  for (size_t i = 0; i < bundled.size() / sizeof(float); ++i) {
    max_diff = std::max(max_diff, std::abs(x[i] - y[i]));
  }
  // The bundled tower's separate q, k, v and the mmproj's fused qkv give the same bits (the float
  // tiles compute every output as one chain, whatever the matrix's shape).
  EXPECT_EQ(max_diff, 0.0f);

  r = RunCommand(env + Qwen() + " generate --model ollama:qwen3.5:0.8b --tokens 1 2>&1");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, store.dir() + "/manifests/registry.ollama.ai/library/"
                                                     "qwen3.5/0.8b"))
      << r.out;
}

// Greedy generation reproduces llama.cpp's tokens on the F32 fixture.
TEST(Generate, GreedyReproducesLlamaCpp) {
  for (const ReferenceCase& c : LoadReference("reference/llama.cpp/f32")) {
    CommandResult r = RunCommand(
        absl::StrCat(Qwen(), " generate --model ", DataPath("models/tiny-qwen35-f32.gguf"),
                     " --tokens ", absl::StrJoin(c.prompt, ","), " --temperature 0 --max-tokens ",
                     c.greedy.size(), " 2>/dev/null"));
    ASSERT_EQ(r.status, 0) << c.name;
    EXPECT_EQ(r.out, absl::StrCat(absl::StrJoin(c.greedy, ","), "\n")) << c.name;
  }
}

TEST(Generate, DumpLogitsTeacherForcedMatchesTheReference) {
  const ReferenceCase c = LoadReference("reference/exact/q8_0")[0];
  const std::string dump = ::testing::TempDir() + "/logits.f32";
  std::vector<int32_t> teacher(c.fed.begin() + c.prompt.size(), c.fed.end());
  CommandResult r = RunCommand(absl::StrCat(
      Qwen(), " generate --model ", DataPath("models/tiny-qwen35-q8_0.gguf"), " --tokens ",
      absl::StrJoin(c.prompt, ","), " --teacher-force ", absl::StrJoin(teacher, ","),
      " --reference-math --batch 5 --dump-logits ", dump, " 2>/dev/null"));
  ASSERT_EQ(r.status, 0);
  const std::string bytes = ReadFile(dump);
  ASSERT_EQ(bytes.size(), c.fed.size() * c.n_vocab * sizeof(float));
  const float* ours = reinterpret_cast<const float*>(bytes.data());
  EXPECT_LT(RelativeRms(ours, c.logits.data(), c.logits.size()), 0.005);
}

TEST(Generate, TextAndChatPrompts) {
  const std::string model = DataPath("models/tiny-qwen35-q3_k_m.gguf");
  CommandResult text = RunCommand(absl::StrCat(Qwen(), " generate --model ", model,
                                               " --prompt 'Hello world' --max-tokens 4 --json"));
  ASSERT_EQ(text.status, 0) << text.out;
  auto j = nlohmann::json::parse(text.out);
  EXPECT_FALSE(j["prompt_tokens"].empty());
  EXPECT_TRUE(j.contains("text"));
  const std::string chat = ::testing::TempDir() + "/chat.json";
  WriteFile(chat, R"({"messages":[{"role":"user","content":"Hi"}]})");
  CommandResult c = RunCommand(absl::StrCat(Qwen(), " generate --model ", model, " --chat ", chat,
                                            " --max-tokens 4 --json"));
  ASSERT_EQ(c.status, 0) << c.out;
  auto m = nlohmann::json::parse(c.out)["message"];
  EXPECT_TRUE(m.contains("reasoning") && m.contains("content") && m.contains("tool_calls"));
}

// One binary holds every command's flags: a command refuses the others' (and unknown ones)
// instead of ignoring them, with status 2 and a line naming the flag.
TEST(Flags, ACommandRefusesFlagsOfOtherCommands) {
  const std::string model = DataPath("models/tiny-qwen35-q3_k_m.gguf");
  struct Case {
    std::string args;
    std::string message;
  };
  const Case cases[] = {
      {"serve --check_config --temperature 0.5 --max_tokens 9",
       "qwen serve: --temperature is not a flag of qwen serve"},
      {"serve --temperature=0.5 --model " + model, "--temperature is not a flag of qwen serve"},
      {"serve --check_config --max-tokens 9", "--max_tokens is not a flag of qwen serve"},
      {"serve --check_config --tokens 1,2", "--tokens is not a flag of qwen serve"},
      {"serve --check_config --no_such_flag=1", "qwen serve: unknown flag --no_such_flag"},
      {"tokenize --model " + model + " --workers 2 --text hi",
       "--workers is not a flag of qwen tokenize"},
      {"generate --model " + model + " --tokens 1 --slots 3",
       "--slots is not a flag of qwen generate"},
      {"inspect --noignore_eos " + model, "--ignore_eos is not a flag of qwen inspect"},
      {"inspect --threads 2 " + model, "--threads is not a flag of qwen inspect"},
      {"synth --shape tiny --out /dev/null --kv_type f32", "--kv_type is not a flag of qwen synth"},
  };
  for (const Case& c : cases) {
    CommandResult r = RunCommand(absl::StrCat(Qwen(), " ", c.args, " 2>&1"));
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.out;
    EXPECT_TRUE(absl::StrContains(r.out, c.message)) << c.args << "\n" << r.out;
  }
  // Its own flags, either spelling, --name value and --noflag, and Abseil's help.
  CommandResult r = RunCommand(absl::StrCat(Qwen(), " serve --check_config --model ", model,
                                            " --workers 3 --ctx-size=1024 --nojson 2>&1"));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "  --workers=3")) << r.out;
  r = RunCommand(absl::StrCat(Qwen(), " serve --helpshort 2>&1"));
  EXPECT_TRUE(absl::StrContains(r.out, "--grace_period")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "--temperature")) << r.out;
  // A flag's value is not read as a flag.
  r = RunCommand(absl::StrCat(Qwen(), " tokenize --model ", model, " --text --workers 2>&1"));
  EXPECT_EQ(r.status, 0) << r.out;
}

// synth's vocabulary and chat template are built into the program: it works from any folder.
TEST(Synth, WorksFromAnyDirectory) {
  const std::string dir = ::testing::TempDir() + "/synth-elsewhere";
  const std::string out = dir + "/tiny.gguf";
  CommandResult r =
      RunCommand(absl::StrCat("mkdir -p '", dir, "' && cd '", dir, "' && ", Qwen(),
                              " synth --shape tiny --type q8_0 --out ", out, " 2>&1"));
  ASSERT_EQ(r.status, 0) << r.out;
  r = RunCommand(absl::StrCat(Qwen(), " inspect --json ", out));
  ASSERT_EQ(r.status, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  // The real Qwen3 vocabulary (its merges; byte tokens alone have none), and Qwen3.5's
  // template, byte for byte.
  EXPECT_GT(j["metadata"]["tokenizer.ggml.merges"].size(), 100000u);
  EXPECT_EQ(j["metadata"]["tokenizer.chat_template"],
            ReadFile(DataPath("chat/qwen3.5-chat-template.jinja")));
}

TEST(Generate, BadInputExitsTwoWithAMessage) {
  const std::string model = DataPath("models/tiny-qwen35-f32.gguf");
  CommandResult r =
      RunCommand(absl::StrCat(Qwen(), " generate --model ", model, " --tokens 1,2,99999 2>&1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "99999")) << r.out;
  r = RunCommand(absl::StrCat(Qwen(), " generate --model /nonexistent.gguf --tokens 1 2>&1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.out, "nonexistent")) << r.out;
}

}  // namespace
}  // namespace qwen::testing
