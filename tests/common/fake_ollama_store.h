// A fake Ollama model store in a temporary directory, laid out the way Ollama lays out its own
// (manifests/<host>/<namespace>/<name>/<tag> and blobs/sha256-<hex>), for the tests of
// `--model ollama:NAME[:TAG]`.
#ifndef QWEN_TESTS_COMMON_FAKE_OLLAMA_STORE_H_
#define QWEN_TESTS_COMMON_FAKE_OLLAMA_STORE_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace qwen::testing {

inline constexpr char kOllamaModelMedia[] = "application/vnd.ollama.image.model";
inline constexpr char kOllamaProjectorMedia[] = "application/vnd.ollama.image.projector";

class FakeOllamaStore {
 public:
  struct Layer {
    std::string media_type;
    std::string digest;  // sha256:<hex>
    int64_t size = 0;
  };

  // Creates a new store under `parent` (a test's temporary directory).
  explicit FakeOllamaStore(const std::string& parent) {
    std::string tmpl = parent + "/ollama-models-XXXXXX";
    dir_ = mkdtemp(tmpl.data());
    std::filesystem::create_directories(dir_ + "/blobs");
    std::filesystem::create_directories(dir_ + "/manifests");
  }
  ~FakeOllamaStore() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  const std::string& dir() const { return dir_; }

  // Copies `file` in as a blob named by its SHA-256, as `ollama pull` stores it.
  Layer AddBlob(const std::string& file, const std::string& media_type) {
    std::string sum(64, '0');
    if (FILE* p = popen(absl::StrCat("sha256sum '", file, "'").c_str(), "r")) {
      if (std::fread(sum.data(), 1, 64, p) != 64) sum.assign(64, '0');
      pclose(p);
    }
    const std::string blob = absl::StrCat(dir_, "/blobs/sha256-", sum);
    std::filesystem::copy_file(file, blob, std::filesystem::copy_options::overwrite_existing);
    return Layer{media_type, absl::StrCat("sha256:", sum),
                 static_cast<int64_t>(std::filesystem::file_size(blob))};
  }

  // Writes the manifest of `host/namespace/name/tag` (a path under manifests/) with these
  // layers, plus a config and a template layer as Ollama's manifests have.
  std::string AddManifest(const std::string& name_path, const std::vector<Layer>& layers) {
    nlohmann::json m;
    m["schemaVersion"] = 2;
    m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json";
    m["config"] = {{"mediaType", "application/vnd.docker.container.image.v1+json"},
                   {"digest", "sha256:" + std::string(64, 'c')},
                   {"size", 485}};
    m["layers"] = nlohmann::json::array();
    for (const Layer& l : layers) {
      m["layers"].push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}});
    }
    m["layers"].push_back({{"mediaType", "application/vnd.ollama.image.template"},
                           {"digest", "sha256:" + std::string(64, 'a')},
                           {"size", 1723}});
    return WriteManifest(name_path, m.dump());
  }

  std::string WriteManifest(const std::string& name_path, const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/manifests/", name_path);
    std::filesystem::create_directories(path.substr(0, path.rfind('/')));
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

 private:
  std::string dir_;
};

}  // namespace qwen::testing

#endif  // QWEN_TESTS_COMMON_FAKE_OLLAMA_STORE_H_
