// Resolving `ollama:NAME[:TAG]` in a fake Ollama store built in a temporary directory.
#include "inference/store/ollama_store.h"

#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/fake_ollama_store.h"
#include "tests/common/test_util.h"

namespace qwen::store {
namespace {

using ::qwen::testing::DataPath;
using ::qwen::testing::FakeOllamaStore;
using ::testing::HasSubstr;

TEST(ParseOllamaName, FillsOllamasDefaults) {
  auto n = ParseOllamaName("ollama:qwen3.5:4b");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->host, "registry.ollama.ai");
  EXPECT_EQ(n->name_space, "library");
  EXPECT_EQ(n->name, "qwen3.5");
  EXPECT_EQ(n->tag, "4b");
  EXPECT_EQ(n->ToString(), "registry.ollama.ai/library/qwen3.5:4b");

  n = ParseOllamaName("qwen3.5");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->tag, "latest");

  n = ParseOllamaName("someone/qwen3.5-tuned:q8_0");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->name_space, "someone");
  EXPECT_EQ(n->name, "qwen3.5-tuned");

  n = ParseOllamaName("hf.co/unsloth/Qwen3.5-4B-GGUF:Q3_K_M");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->host, "hf.co");
  EXPECT_EQ(n->name_space, "unsloth");
  EXPECT_EQ(n->name, "Qwen3.5-4B-GGUF");
  EXPECT_EQ(n->tag, "Q3_K_M");

  // A port in the host is not a tag.
  n = ParseOllamaName("localhost:5000/team/qwen3.5");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->host, "localhost:5000");
  EXPECT_EQ(n->tag, "latest");
}

TEST(ParseOllamaName, RefusesNamesThatCouldLeaveTheStore) {
  for (const char* bad : {"ollama:", "../../etc/passwd", "qwen3.5:../x", "a/b/c/d", "qwen 3.5",
                          "library/..:4b", "qwen3.5:", "/qwen3.5", "qwen3.5:4b/x"}) {
    auto n = ParseOllamaName(bad);
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(n.status().message(), HasSubstr("ollama model name")) << bad;
  }
}

class OllamaStoreTest : public ::testing::Test {
 protected:
  FakeOllamaStore store_{::testing::TempDir()};
  const std::string model_file_ = DataPath("models/tiny-qwen35-ollama-q3_k_m.gguf");
};

TEST_F(OllamaStoreTest, ResolvesTheModelLayerAndTheProjector) {
  const auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  const auto proj = store_.AddBlob(DataPath("models/mmproj-tiny-qwen35-f16.gguf"),
                                   qwen::testing::kOllamaProjectorMedia);
  const std::string manifest =
      store_.AddManifest("registry.ollama.ai/library/qwen3.5/4b", {model, proj});
  auto r = ResolveOllamaModel("ollama:qwen3.5:4b", store_.dir());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_path, store_.dir() + "/blobs/sha256-" + model.digest.substr(7));
  EXPECT_EQ(r->projector_path, store_.dir() + "/blobs/sha256-" + proj.digest.substr(7));
  EXPECT_EQ(r->manifest_path, manifest);
  EXPECT_EQ(r->model_digest, model.digest);
  EXPECT_EQ(qwen::testing::ReadFile(r->model_path), qwen::testing::ReadFile(model_file_));
}

TEST_F(OllamaStoreTest, FindsTheStoreThroughOllamaModels) {
  const auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  store_.AddManifest("registry.ollama.ai/library/qwen3.5/latest", {model});
  setenv("OLLAMA_MODELS", store_.dir().c_str(), 1);
  EXPECT_EQ(DefaultOllamaModelsDir(), store_.dir());
  auto r = ResolveOllamaModel("qwen3.5");
  unsetenv("OLLAMA_MODELS");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->projector_path.empty());
  // Without it, the user's own store.
  const char* home = std::getenv("HOME");
  if (home != nullptr) EXPECT_EQ(DefaultOllamaModelsDir(), std::string(home) + "/.ollama/models");
}

TEST_F(OllamaStoreTest, OtherHostsAndNamespacesHaveTheirOwnManifestPath) {
  const auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  store_.AddManifest("hf.co/unsloth/Qwen3.5-4B-GGUF/Q3_K_M", {model});
  auto r = ResolveOllamaModel("hf.co/unsloth/Qwen3.5-4B-GGUF:Q3_K_M", store_.dir());
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST_F(OllamaStoreTest, AMissingTagSaysWhereItLooked) {
  const auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  store_.AddManifest("registry.ollama.ai/library/qwen3.5/4b", {model});
  auto r = ResolveOllamaModel("qwen3.5:9b", store_.dir());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(),
              HasSubstr(store_.dir() + "/manifests/registry.ollama.ai/library/qwen3.5/9b"));
  EXPECT_THAT(r.status().message(), HasSubstr("other tags"));
  r = ResolveOllamaModel("llama3:8b", store_.dir());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("ollama pull"));
}

TEST_F(OllamaStoreTest, AMissingStoreSaysWhereItLooked) {
  auto r = ResolveOllamaModel("qwen3.5:4b", store_.dir() + "/nowhere");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(store_.dir() + "/nowhere"));
  EXPECT_THAT(r.status().message(), HasSubstr("OLLAMA_MODELS"));
}

TEST_F(OllamaStoreTest, AMissingBlobIsNamed) {
  auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  model.digest = "sha256:" + std::string(64, 'e');
  store_.AddManifest("registry.ollama.ai/library/qwen3.5/4b", {model});
  auto r = ResolveOllamaModel("qwen3.5:4b", store_.dir());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(),
              HasSubstr(store_.dir() + "/blobs/sha256-" + std::string(64, 'e')));
}

TEST_F(OllamaStoreTest, APartialBlobIsRefused) {
  auto model = store_.AddBlob(model_file_, qwen::testing::kOllamaModelMedia);
  model.size += 1000;
  store_.AddManifest("registry.ollama.ai/library/qwen3.5/4b", {model});
  auto r = ResolveOllamaModel("qwen3.5:4b", store_.dir());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("partial pull"));
}

TEST_F(OllamaStoreTest, AManifestWithoutAModelLayerIsRefused) {
  const auto proj = store_.AddBlob(DataPath("models/mmproj-tiny-qwen35-f16.gguf"),
                                   qwen::testing::kOllamaProjectorMedia);
  store_.AddManifest("registry.ollama.ai/library/qwen3.5/4b", {proj});
  auto r = ResolveOllamaModel("qwen3.5:4b", store_.dir());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("no model layer"));
  EXPECT_THAT(r.status().message(), HasSubstr("application/vnd.ollama.image.model"));
}

TEST_F(OllamaStoreTest, BrokenManifestsAreRefusedWithTheirPath) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"not json", "is not a JSON object"},
      {"{\"schemaVersion\": 2}", "no \"layers\" array"},
      {R"({"manifests": [{"digest": "sha256:00"}]})", "manifest list"},
      {R"({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                       "digest": "sha256:../../x"}]})",
       "is not of the form sha256:<64 hex digits>"},
      {R"({"layers": [{"mediaType": "application/vnd.ollama.image.model"}]})", "has no digest"},
  };
  for (const Case& c : cases) {
    const std::string path = store_.WriteManifest("registry.ollama.ai/library/broken/1", c.text);
    auto r = ResolveOllamaModel("broken:1", store_.dir());
    EXPECT_FALSE(r.ok()) << c.text;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.text;
    EXPECT_THAT(r.status().message(), HasSubstr(path)) << c.text;
  }
}

}  // namespace
}  // namespace qwen::store
