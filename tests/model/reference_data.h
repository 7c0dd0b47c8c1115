// Loads the fixtures' reference logits: tests/data/cases.json and reference/<kind>/<type>/.
#ifndef QWEN_TESTS_MODEL_REFERENCE_DATA_H_
#define QWEN_TESTS_MODEL_REFERENCE_DATA_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/common/test_util.h"

namespace qwen::testing {

struct ReferenceCase {
  std::string name;
  std::vector<int32_t> prompt;
  std::vector<int32_t> fed;     // prompt followed by the tokens fed after it
  std::vector<int32_t> greedy;  // llama.cpp's greedy continuation (llama.cpp references only)
  int64_t n_vocab = 0;
  std::vector<float> logits;  // [fed.size(), n_vocab]
};

// `dir` is e.g. "reference/llama.cpp/f32" or "reference/exact/q8_0".
inline std::vector<ReferenceCase> LoadReference(const std::string& dir) {
  std::vector<ReferenceCase> out;
  const auto j = nlohmann::json::parse(ReadFile(DataPath(dir + "/reference.json")));
  for (const auto& c : j) {
    ReferenceCase r;
    r.name = c["name"];
    r.prompt = c["tokens"].get<std::vector<int32_t>>();
    if (c.contains("fed_tokens")) {
      r.fed = c["fed_tokens"].get<std::vector<int32_t>>();
    } else {
      r.greedy = c["greedy"].get<std::vector<int32_t>>();
      r.fed = r.prompt;
      r.fed.insert(r.fed.end(), r.greedy.begin(), r.greedy.end());
    }
    r.n_vocab = c["n_vocab"];
    const std::string bytes = ReadFile(DataPath(dir + "/" + c["logits_file"].get<std::string>()));
    r.logits.resize(bytes.size() / sizeof(float));
    std::memcpy(r.logits.data(), bytes.data(), bytes.size());
    const int64_t rows = c["logits_rows"];
    if (static_cast<int64_t>(r.logits.size()) != rows * r.n_vocab) r.logits.clear();
    // A reference file may hold fewer rows than tokens fed (the last token's row is optional).
    r.fed.resize(std::min<size_t>(r.fed.size(), rows));
    out.push_back(std::move(r));
  }
  return out;
}

// sqrt(mean((a - b)^2)) / sqrt(mean(b^2)) over all values.
inline double RelativeRms(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline int Argmax(const float* x, int64_t n) {
  int best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = static_cast<int>(i);
  }
  return best;
}

// Gap between the largest and the second largest value.
inline float Top2Margin(const float* x, int64_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > a) {
      b = a;
      a = x[i];
    } else if (x[i] > b) {
      b = x[i];
    }
  }
  return a - b;
}

}  // namespace qwen::testing

#endif  // QWEN_TESTS_MODEL_REFERENCE_DATA_H_
