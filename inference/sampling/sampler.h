// Turning logits into the next token.
#ifndef QWEN_INFERENCE_SAMPLING_SAMPLER_H_
#define QWEN_INFERENCE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace qwen::sampling {

// Parameters of one request. The defaults change nothing (plain sampling at temperature 1).
struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy (argmax after bias and penalties)
  int32_t top_k = 0;                // keep the k most likely tokens; 0: off
  float top_p = 1.0f;               // keep the smallest set with probability >= top_p; 1: off
  float min_p = 0.0f;               // drop tokens below min_p x the top probability; 0: off
  float repetition_penalty = 1.0f;  // > 1 discourages tokens seen in the prompt or output
  float presence_penalty = 0.0f;    // subtracted once from tokens generated so far
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the generated tokens
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logit of a token
  uint64_t seed = 0;  // the random stream; same seed and request, same tokens
};

// Checks ranges; the message names the offending field.
absl::Status Validate(const SamplingParams& p, int64_t n_vocab);

// One token's log-probability and its strongest alternatives.
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), most likely first
};

// Samples one sequence's tokens. The transforms run in this documented order:
//   0. the allowed-token mask, when given (others get -inf);
//   1. logit bias;
//   2. repetition penalty over prompt and generated tokens (positive logits divided by it,
//      negative ones multiplied, as in CTRL / Hugging Face);
//   3. presence and frequency penalties over the generated tokens (OpenAI's definition);
//   4. temperature 0 stops here and takes the argmax (ties: the lowest id);
//   5. division by the temperature;
//   6. top-k, 7. softmax, 8. top-p, 9. min-p;
//   10. a draw from what remains, renormalised, with a generator seeded by `seed`.
//
// Thread-compatible: one Sampler per sequence.
class Sampler {
 public:
  Sampler(SamplingParams params, int64_t n_vocab, absl::Span<const int32_t> prompt);

  // Chooses the next token from `logits` [n_vocab] (not modified) and records it as generated.
  // With `allowed` (a bitset over the vocabulary, bit t of word t / 64), only tokens whose bit is
  // set can be chosen: the others are removed before every transform, so bias, penalties,
  // top-k/p, min-p and temperature 0 all act among the allowed tokens (structured output).
  // At least one token must be allowed.
  int32_t Sample(const float* logits, const uint64_t* allowed = nullptr);

  // log_softmax of the raw logits (before any transform) for `token`, with the `top_n`
  // highest alternatives.
  static TokenLogprob Logprobs(const float* logits, int64_t n_vocab, int32_t token, int top_n);

  const SamplingParams& params() const { return params_; }

 private:
  void Transform(float* logits) const;

  SamplingParams params_;
  int64_t n_vocab_;
  std::mt19937_64 rng_;
  absl::flat_hash_map<int32_t, int32_t> prompt_counts_;     // for the repetition penalty
  absl::flat_hash_map<int32_t, int32_t> generated_counts_;  // for all penalties
  std::vector<float> work_;
  std::vector<int32_t> candidates_;
};

}  // namespace qwen::sampling

#endif  // QWEN_INFERENCE_SAMPLING_SAMPLER_H_
