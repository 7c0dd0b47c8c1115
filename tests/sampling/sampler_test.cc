// The sampler on hand-made logits: each transform's effect, the documented order in which they
// run, the mask, seeds, and that draws follow the distribution that is left.
#include "inference/sampling/sampler.h"

#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qwen::sampling {
namespace {

using ::testing::HasSubstr;

// Logits whose softmax is `probs` (which need not sum to 1).
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// How often each token is drawn in `n` draws of fresh samplers (so that penalties, which see
// generated tokens, do not act), seeds 0..n-1.
std::map<int32_t, int> Histogram(const std::vector<float>& logits, SamplingParams p, int n,
                                 const std::vector<uint64_t>* mask = nullptr) {
  std::map<int32_t, int> counts;
  for (int i = 0; i < n; ++i) {
    p.seed = static_cast<uint64_t>(i);
    Sampler s(p, static_cast<int64_t>(logits.size()), {});
    ++counts[s.Sample(logits.data(), mask != nullptr ? mask->data() : nullptr)];
  }
  return counts;
}

std::set<int32_t> Support(const std::map<int32_t, int>& counts) {
  std::set<int32_t> out;
  for (const auto& [t, n] : counts) out.insert(t);
  return out;
}

// Each drawn frequency within 5 standard errors of the expected probability.
void ExpectFrequencies(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& want,
                       int n) {
  for (const auto& [t, p] : want) {
    const double got = counts.count(t) ? counts.at(t) / static_cast<double>(n) : 0.0;
    const double se = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(got, p, 5 * se + 1e-9) << "token " << t;
  }
}

constexpr int kDraws = 4000;

TEST(Sampler, GreedyTakesTheArgmaxAndTheLowestIdOnTies) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  Sampler s(Greedy(), 4, {});
  EXPECT_EQ(s.Sample(l.data()), 1);
}

TEST(Sampler, LogitBiasIsAddedToTheToken) {
  const std::vector<float> l = {1.0f, 0.0f, 0.5f};
  SamplingParams p = Greedy();
  p.logit_bias = {{2, 0.6f}};  // 0.5 + 0.6 > 1.0
  EXPECT_EQ(Sampler(p, 3, {}).Sample(l.data()), 2);
  p.logit_bias = {{2, 0.4f}};  // 0.9 < 1.0
  EXPECT_EQ(Sampler(p, 3, {}).Sample(l.data()), 0);
  p.logit_bias = {{0, -INFINITY}};  // a ban
  EXPECT_EQ(Sampler(p, 3, {}).Sample(l.data()), 2);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<int32_t> prompt = {0};
  SamplingParams p = Greedy();
  // Positive: 2.0 / 1.5 = 1.33 < 1.5 (token 1 wins); 2.0 / 1.2 = 1.67 > 1.5 (token 0 keeps it).
  const std::vector<float> pos = {2.0f, 1.5f};
  p.repetition_penalty = 1.5f;
  EXPECT_EQ(Sampler(p, 2, prompt).Sample(pos.data()), 1);
  p.repetition_penalty = 1.2f;
  EXPECT_EQ(Sampler(p, 2, prompt).Sample(pos.data()), 0);
  // Negative: -1.0 x 1.5 = -1.5 < -1.2. (Dividing would have raised it to -0.67.)
  const std::vector<float> neg = {-1.0f, -1.2f};
  p.repetition_penalty = 1.5f;
  EXPECT_EQ(Sampler(p, 2, prompt).Sample(neg.data()), 1);
  // A token in neither the prompt nor the output is untouched.
  EXPECT_EQ(Sampler(p, 2, {}).Sample(pos.data()), 0);
}

TEST(Sampler, RepetitionPenaltySeesGeneratedTokensOnce) {
  // Token 0 wins, is generated, and from then on its logit is divided by 2 (once, however many
  // times it was generated): 3.0 / 2 = 1.5 < 2.0.
  const std::vector<float> l = {3.0f, 2.0f, 1.6f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  Sampler s(p, 3, {});
  EXPECT_EQ(s.Sample(l.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 1);
  // Both penalised once: 1.5 and 1.0 against 1.6.
  EXPECT_EQ(s.Sample(l.data()), 2);
}

TEST(Sampler, PresencePenaltyIsSubtractedOncePerGeneratedToken) {
  const std::vector<float> l = {2.0f, 1.5f};
  SamplingParams p = Greedy();
  p.presence_penalty = 0.6f;  // 2.0 - 0.6 = 1.4 < 1.5
  Sampler s(p, 2, {});
  EXPECT_EQ(s.Sample(l.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 1);
  // Both generated once now: 1.4 against 0.9.
  EXPECT_EQ(s.Sample(l.data()), 0);
  // Still once for token 0, generated twice: 1.4 against 0.9, not 0.8.
  EXPECT_EQ(s.Sample(l.data()), 0);
  // The prompt does not count.
  const std::vector<int32_t> prompt = {0, 0, 0};
  EXPECT_EQ(Sampler(p, 2, prompt).Sample(l.data()), 0);
}

TEST(Sampler, FrequencyPenaltyGrowsWithEachOccurrence) {
  const std::vector<float> l = {2.0f, 1.0f};
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.4f;
  Sampler s(p, 2, {});
  // 2.0, 1.6, 1.2 stay above 1.0; after three occurrences 0.8 does not.
  EXPECT_EQ(s.Sample(l.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 1);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> l = LogitsOf({0.6, 0.3, 0.1});
  SamplingParams p;
  p.temperature = 1;
  ExpectFrequencies(Histogram(l, p, kDraws), {{0, 0.6}, {1, 0.3}, {2, 0.1}}, kDraws);
  // At temperature T the probabilities are p^(1/T), renormalised.
  p.temperature = 0.5f;
  const double z = 0.36 + 0.09 + 0.01;
  ExpectFrequencies(Histogram(l, p, kDraws), {{0, 0.36 / z}, {1, 0.09 / z}, {2, 0.01 / z}}, kDraws);
  p.temperature = 2.0f;
  const double a = std::sqrt(0.6), b = std::sqrt(0.3), c = std::sqrt(0.1);
  ExpectFrequencies(Histogram(l, p, kDraws),
                    {{0, a / (a + b + c)}, {1, b / (a + b + c)}, {2, c / (a + b + c)}}, kDraws);
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  const std::vector<float> l = LogitsOf({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingParams p;
  p.top_k = 2;
  const auto counts = Histogram(l, p, kDraws);
  EXPECT_EQ(Support(counts), (std::set<int32_t>{1, 3}));
  ExpectFrequencies(counts, {{1, 0.4 / 0.7}, {3, 0.3 / 0.7}}, kDraws);
  p.top_k = 5;  // all of them
  EXPECT_EQ(Support(Histogram(l, p, kDraws)).size(), 5u);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<float> l = LogitsOf({0.1, 0.45, 0.05, 0.3, 0.1});
  SamplingParams p;
  p.top_p = 0.7f;  // 0.45 + 0.3 = 0.75 >= 0.7
  const auto counts = Histogram(l, p, kDraws);
  EXPECT_EQ(Support(counts), (std::set<int32_t>{1, 3}));
  ExpectFrequencies(counts, {{1, 0.45 / 0.75}, {3, 0.3 / 0.75}}, kDraws);
  p.top_p = 0.4f;  // the most likely alone reaches it
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{1}));
  p.top_p = 0.8f;  // 0.75, then a tie of 0.1s: the lower id first
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{0, 1, 3}));
}

// Over a vocabulary of Qwen's size, where the sampler selects the nucleus in chunks instead of
// sorting everything, the nucleus is exactly what a full sort gives, including beyond the first
// chunk and with ties.
TEST(Sampler, TopPOverALargeVocabularyMatchesAFullSort) {
  const int64_t n = 248320;
  std::vector<float> l(n);
  uint64_t x = 12345;
  for (int64_t t = 0; t < n; ++t) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    // Quantised to create ties; a few hundred tokens far above the rest.
    l[t] = static_cast<float>((x >> 40) % 64) / 8.0f + (t % 997 == 0 ? 12.0f : 0.0f);
  }
  for (float top_p : {0.05f, 0.5f, 0.9f, 0.999f}) {
    // The expected nucleus: sort everything by (logit desc, id asc), accumulate.
    std::vector<int32_t> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    std::sort(ids.begin(), ids.end(),
              [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    const float max_l = l[ids[0]];
    double total = 0;
    for (int32_t t : ids) total += std::exp(l[t] - max_l);
    double cum = 0;
    std::set<int32_t> nucleus;
    for (int32_t t : ids) {
      nucleus.insert(t);
      cum += std::exp(l[t] - max_l);
      if (cum >= top_p * total) break;
    }
    // The nucleus' mass beyond its 64 most likely tokens (the sampler's first chunk).
    double beyond = 0;
    for (size_t r = 64; r < nucleus.size(); ++r) beyond += std::exp(l[ids[r]] - max_l);
    beyond /= cum;
    std::vector<int32_t> rank(n);
    for (int64_t r = 0; r < n; ++r) rank[ids[r]] = static_cast<int32_t>(r);
    SamplingParams p;
    p.top_p = top_p;
    const int draws = 300;
    int past_first_chunk = 0;
    for (int i = 0; i < draws; ++i) {
      p.seed = static_cast<uint64_t>(i);
      const int32_t t = Sampler(p, n, {}).Sample(l.data());
      EXPECT_TRUE(nucleus.count(t)) << "top_p " << top_p << " token " << t;
      if (rank[t] >= 64) ++past_first_chunk;
    }
    // Where the nucleus reaches well past the first chunk, draws do too (the chance that none
    // would is below 1e-9).
    if (std::pow(1 - beyond, draws) < 1e-9) {
      EXPECT_GT(past_first_chunk, 0) << "top_p " << top_p << ", nucleus " << nucleus.size();
    }
  }
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheTop) {
  const std::vector<float> l = LogitsOf({0.4, 0.3, 0.18, 0.12});
  SamplingParams p;
  p.min_p = 0.5f;  // cut at 0.2
  const auto counts = Histogram(l, p, kDraws);
  EXPECT_EQ(Support(counts), (std::set<int32_t>{0, 1}));
  ExpectFrequencies(counts, {{0, 0.4 / 0.7}, {1, 0.3 / 0.7}}, kDraws);
  p.min_p = 0.25f;  // cut at 0.1: all stay
  EXPECT_EQ(Support(Histogram(l, p, kDraws)).size(), 4u);
}

// The documented order, each pair checked with values where the other order would choose
// differently.
TEST(Sampler, BiasRunsBeforeTheRepetitionPenalty) {
  // Bias then penalty: (1 + 1) / 2 = 1 < 1.25. Penalty then bias would give 1 / 2 + 1 = 1.5.
  const std::vector<float> l = {1.0f, 1.25f};
  SamplingParams p = Greedy();
  p.logit_bias = {{0, 1.0f}};
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0};
  EXPECT_EQ(Sampler(p, 2, prompt).Sample(l.data()), 1);
}

TEST(Sampler, RepetitionPenaltyRunsBeforePresenceAndFrequency) {
  // Token 0 generated once. Repetition then presence: 3 / 2 - 1 = 0.5 < 0.8. Presence then
  // repetition would give (3 - 1) / 2 = 1.0 > 0.8.
  const std::vector<float> first = {3.0f, -10.0f};
  const std::vector<float> l = {3.0f, 0.8f};
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 1.0f;
  Sampler s(p, 2, {});
  ASSERT_EQ(s.Sample(first.data()), 0);
  EXPECT_EQ(s.Sample(l.data()), 1);
}

TEST(Sampler, TemperatureRunsBeforeTopP) {
  // probabilities 0.55, 0.25, 0.2; top_p 0.52. At temperature 2 they flatten to 0.44, 0.30, 0.26
  // and the nucleus is {0, 1}; top-p on the raw probabilities would keep {0} only.
  const std::vector<float> l = LogitsOf({0.55, 0.25, 0.2});
  SamplingParams p;
  p.temperature = 2.0f;
  p.top_p = 0.52f;
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{0, 1}));
}

TEST(Sampler, TopKRunsBeforeTopPWhichSeesRenormalisedProbabilities) {
  // 0.4, 0.3, 0.2, 0.1 with top_k 2: 0.57 and 0.43, so top_p 0.5 keeps {0}. Top-p on the full
  // distribution would keep {0, 1} (0.4 < 0.5).
  const std::vector<float> l = LogitsOf({0.4, 0.3, 0.2, 0.1});
  SamplingParams p;
  p.top_k = 2;
  p.top_p = 0.5f;
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{0}));
}

TEST(Sampler, TopPRunsBeforeMinP) {
  // 0.5, 0.3, 0.2 with top_p 0.6 keeps {0, 1}; min_p 0.5 then cuts at 0.25 and keeps both.
  // Min-p first would keep {0, 1} as well, but top-p would then see them renormalised (0.625,
  // 0.375) and keep {0} alone.
  const std::vector<float> l = LogitsOf({0.5, 0.3, 0.2});
  SamplingParams p;
  p.top_p = 0.6f;
  p.min_p = 0.5f;
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{0, 1}));
  // And min-p does cut what top-p kept: min_p 0.7 (cut 0.35) leaves {0}.
  p.min_p = 0.7f;
  EXPECT_EQ(Support(Histogram(l, p, kDraws)), (std::set<int32_t>{0}));
}

TEST(Sampler, TheMaskActsBeforeEveryTransform) {
  const std::vector<float> l = {5.0f, 1.0f, 0.9f, 0.1f};
  std::vector<uint64_t> mask = {0b0110};  // tokens 1 and 2
  // Greedy: the best allowed token.
  EXPECT_EQ(Sampler(Greedy(), 4, {}).Sample(l.data(), mask.data()), 1);
  // top_k 1 among the allowed: token 1, never the masked token 0.
  SamplingParams p;
  p.top_k = 1;
  EXPECT_EQ(Support(Histogram(l, p, 200, &mask)), (std::set<int32_t>{1}));
  // Sampling draws from the allowed tokens only, in their renormalised proportions.
  p.top_k = 0;
  const double a = std::exp(1.0), b = std::exp(0.9);
  const auto counts = Histogram(l, p, kDraws, &mask);
  EXPECT_EQ(Support(counts), (std::set<int32_t>{1, 2}));
  ExpectFrequencies(counts, {{1, a / (a + b)}, {2, b / (a + b)}}, kDraws);
}

// A client may ban tokens with a bias of -inf. When it bans every token the constraint allows,
// greedy sampling must still pick an allowed one: a masked-out token is -inf too, and taking it
// would be a token the grammar refuses.
TEST(Sampler, GreedyWithEveryAllowedTokenBannedStaysInsideTheMask) {
  const std::vector<float> l = {1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<uint64_t> mask = {0b1100};  // tokens 2 and 3
  SamplingParams p = Greedy();
  p.logit_bias = {{2, -INFINITY}, {3, -INFINITY}};
  EXPECT_EQ(Sampler(p, 4, {}).Sample(l.data(), mask.data()), 2);
}

TEST(Sampler, TheSameSeedGivesTheSameTokens) {
  const std::vector<float> l = LogitsOf({0.3, 0.3, 0.2, 0.2});
  SamplingParams p;
  p.seed = 42;
  Sampler a(p, 4, {}), b(p, 4, {});
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(l.data()));
    tb.push_back(b.Sample(l.data()));
  }
  EXPECT_EQ(ta, tb);
  p.seed = 43;
  Sampler c(p, 4, {});
  std::vector<int32_t> tc;
  for (int i = 0; i < 50; ++i) tc.push_back(c.Sample(l.data()));
  EXPECT_NE(ta, tc);
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfTheRawLogits) {
  const std::vector<float> l = LogitsOf({0.5, 0.25, 0.125, 0.125});
  const TokenLogprob lp = Sampler::Logprobs(l.data(), 4, 1, 2);
  EXPECT_NEAR(lp.logprob, std::log(0.25), 1e-5);
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].first, 0);
  EXPECT_NEAR(lp.top[0].second, std::log(0.5), 1e-5);
  EXPECT_EQ(lp.top[1].first, 1);
}

TEST(Sampler, ValidateNamesTheField) {
  SamplingParams p;
  p.top_p = 0;
  EXPECT_THAT(std::string(Validate(p, 10).message()), HasSubstr("top_p"));
  p = {};
  p.min_p = 1.5f;
  EXPECT_THAT(std::string(Validate(p, 10).message()), HasSubstr("min_p"));
  p = {};
  p.logit_bias = {{10, 1.0f}};
  EXPECT_THAT(std::string(Validate(p, 10).message()), HasSubstr("logit_bias"));
  p = {};
  p.repetition_penalty = 0;
  EXPECT_THAT(std::string(Validate(p, 10).message()), HasSubstr("repetition_penalty"));
  EXPECT_TRUE(Validate(SamplingParams{}, 10).ok());
}

}  // namespace
}  // namespace qwen::sampling
