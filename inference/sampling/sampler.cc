#include "inference/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace qwen::sampling {

absl::Status Validate(const SamplingParams& p, int64_t n_vocab) {
  auto bad = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
  };
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return bad("temperature", "must be a finite number >= 0");
  }
  if (p.top_k < 0) return bad("top_k", "must be >= 0 (0 turns it off)");
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) {
    return bad("top_p", "must be in (0, 1]");
  }
  if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) {
    return bad("min_p", "must be in [0, 1]");
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) {
    return bad("repetition_penalty", "must be a finite number > 0 (1 turns it off)");
  }
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 100) {
    return bad("presence_penalty", "must be a finite number in [-100, 100]");
  }
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 100) {
    return bad("frequency_penalty", "must be a finite number in [-100, 100]");
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= n_vocab) {
      return bad("logit_bias",
                 absl::StrCat("token id ", token, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
    if (std::isnan(bias))
      return bad("logit_bias", absl::StrCat("bias of token ", token, " is NaN"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(SamplingParams params, int64_t n_vocab, absl::Span<const int32_t> prompt)
    : params_(std::move(params)), n_vocab_(n_vocab), rng_(params_.seed), work_(n_vocab) {
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t t : prompt) ++prompt_counts_[t];
  }
}

void Sampler::Transform(float* l) const {
  for (const auto& [token, bias] : params_.logit_bias) l[token] += bias;
  const float rep = params_.repetition_penalty;
  if (rep != 1.0f) {
    auto penalize = [&](int32_t t) { l[t] = l[t] > 0 ? l[t] / rep : l[t] * rep; };
    for (const auto& [t, n] : prompt_counts_) penalize(t);
    for (const auto& [t, n] : generated_counts_) {
      if (!prompt_counts_.contains(t)) penalize(t);
    }
  }
  if (params_.presence_penalty != 0 || params_.frequency_penalty != 0) {
    for (const auto& [t, n] : generated_counts_) {
      l[t] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(n);
    }
  }
}

int32_t Sampler::Sample(const float* logits, const uint64_t* allowed) {
  float* l = work_.data();
  std::copy(logits, logits + n_vocab_, l);
  auto is_allowed = [allowed](int64_t t) { return ((allowed[t >> 6] >> (t & 63)) & 1) != 0; };
  if (allowed != nullptr) {
    const int64_t words = (n_vocab_ + 63) / 64;
    for (int64_t w = 0; w < words; ++w) {
      const uint64_t bits = allowed[w];
      if (bits == ~uint64_t{0}) continue;
      const int64_t base = w * 64, end = std::min<int64_t>(base + 64, n_vocab_);
      for (int64_t t = base; t < end; ++t) {
        if (!((bits >> (t - base)) & 1)) l[t] = -INFINITY;
      }
    }
  }
  Transform(l);
  int32_t chosen = 0;
  if (params_.temperature == 0.0f) {
    if (allowed == nullptr) {
      chosen = static_cast<int32_t>(std::max_element(l, l + n_vocab_) - l);
    } else {
      // Among the allowed tokens only: a bias of -inf on every one of them must not let a
      // masked-out token (also -inf) win the tie.
      chosen = -1;
      for (int64_t t = 0; t < n_vocab_; ++t) {
        if (is_allowed(t) && (chosen < 0 || l[t] > l[chosen])) chosen = static_cast<int32_t>(t);
      }
      if (chosen < 0) chosen = 0;  // nothing allowed: the caller's contract says this is not so
    }
  } else {
    const float inv_t = 1.0f / params_.temperature;
    // Candidate set: all tokens (the allowed ones), or the top k.
    if (allowed != nullptr) {
      candidates_.clear();
      for (int64_t t = 0; t < n_vocab_; ++t) {
        if (is_allowed(t)) candidates_.push_back(static_cast<int32_t>(t));
      }
    } else {
      candidates_.resize(n_vocab_);
      std::iota(candidates_.begin(), candidates_.end(), 0);
    }
    // A strict total order (ties: the lower id), so that partial selections agree with a full
    // sort.
    auto by_logit = [l](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
    if (params_.top_k > 0 && params_.top_k < static_cast<int64_t>(candidates_.size())) {
      std::nth_element(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(),
                       by_logit);
      candidates_.resize(params_.top_k);
    }
    float max_l = -INFINITY;
    for (int32_t t : candidates_) max_l = std::max(max_l, l[t]);
    auto prob = [&](int32_t t) { return std::exp((l[t] - max_l) * inv_t); };
    if (params_.top_p < 1.0f) {
      // Smallest prefix (by probability) whose mass reaches top_p. The total needs every
      // candidate, the prefix only the most likely ones: they are selected and sorted in growing
      // chunks (nth_element on the rest, then a sort of the chunk), so a peaked distribution
      // over a 248K vocabulary costs one pass and a sort of a few dozen ids, not a full sort.
      double total = 0;
      for (int32_t t : candidates_) total += prob(t);
      const double target = params_.top_p * total;
      const size_t n = candidates_.size();
      size_t sorted = 0, keep = n;
      double cum = 0;
      for (size_t chunk = 64; sorted < n && keep == n; chunk *= 8) {
        const size_t end = std::min(n, sorted + chunk);
        auto first = candidates_.begin() + static_cast<std::ptrdiff_t>(sorted);
        auto last = candidates_.begin() + static_cast<std::ptrdiff_t>(end);
        if (end < n) std::nth_element(first, last, candidates_.end(), by_logit);
        std::sort(first, last, by_logit);
        for (size_t i = sorted; i < end; ++i) {
          cum += prob(candidates_[i]);
          if (cum >= target) {
            keep = i + 1;
            break;
          }
        }
        sorted = end;
      }
      candidates_.resize(keep);
    }
    // Probabilities (unnormalised) in place of the logits.
    for (int32_t t : candidates_) l[t] = prob(t);
    if (params_.min_p > 0) {
      float p_max = 0;
      for (int32_t t : candidates_) p_max = std::max(p_max, l[t]);
      const float cut = params_.min_p * p_max;
      candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                       [&](int32_t t) { return l[t] < cut; }),
                        candidates_.end());
    }
    double kept = 0;
    for (int32_t t : candidates_) kept += l[t];
    // 53 random bits: a uniform double in [0, kept).
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * kept;
    double cum = 0;
    chosen = candidates_.back();
    for (int32_t t : candidates_) {
      cum += l[t];
      if (u < cum) {
        chosen = t;
        break;
      }
    }
  }
  ++generated_counts_[chosen];
  return chosen;
}

TokenLogprob Sampler::Logprobs(const float* logits, int64_t n_vocab, int32_t token, int top_n) {
  float max_l = -INFINITY;
  for (int64_t i = 0; i < n_vocab; ++i) max_l = std::max(max_l, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_l));
  const double log_z = max_l + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(logits[token] - log_z);
  if (top_n > 0) {
    top_n = static_cast<int>(std::min<int64_t>(top_n, n_vocab));
    std::vector<int32_t> ids(n_vocab);
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [logits](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(ids.begin(), ids.begin() + top_n, ids.end(), by_logit);
    for (int k = 0; k < top_n; ++k) {
      out.top.emplace_back(ids[k], static_cast<float>(logits[ids[k]] - log_z));
    }
  }
  return out;
}

}  // namespace qwen::sampling
