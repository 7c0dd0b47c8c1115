// Speculative verification leaves a sequence exactly where plain decoding leaves it: a verify
// segment (the last token and k drafts, Segment::keep_states) computes every row as a decode
// step would, the same bits, and SequenceState::Rollback() after a refused draft restores the
// delta-net states, the token count, and the MTP head's KV cache and input row. Checked with an
// oracle drafter (the plain run's own tokens) made wrong at chosen positions, on every tiny
// fixture (every weight type). Also: the MTP block loads from both layouts and drafts.
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "inference/common/thread_pool.h"
#include "tests/model/model_runner.h"

namespace qwen::testing {
namespace {

struct Fixture {
  const char* name;
  const char* path;
  bool mtp;  // the file has an MTP head (its catch-up runs with every pass)
};

void PrintTo(const Fixture& f, std::ostream* os) { *os << f.path; }

std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

int32_t Argmax(const float* l, int64_t n) {
  return static_cast<int32_t>(std::max_element(l, l + n) - l);
}

constexpr int kGenerate = 40;

class SpeculativeModel : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    m_ = LoadModel(std::string("models/") + GetParam().path);
    ASSERT_NE(m_.model, nullptr);
    V_ = m_.model->config().n_vocab;
    prompt_ = RandomTokens(57, 3, static_cast<int32_t>(V_));
  }

  std::unique_ptr<model::SequenceState> NewState() {
    auto st = m_.model->NewState(256);
    EXPECT_TRUE(st.ok()) << st.status();
    return std::move(*st);
  }

  // One forward pass of `tokens` on `state`; returns its logit rows.
  std::vector<float> Feed(model::SequenceState* state, const std::vector<int32_t>& tokens,
                          model::Logits logits, bool keep_states = false) {
    model::Segment seg{state, absl::MakeConstSpan(tokens), logits};
    seg.keep_states = keep_states;
    seg.mtp = GetParam().mtp;
    std::vector<float> out(model::Model::LogitRows({seg}) * V_);
    absl::Status s = m_.model->Forward(ctx_, {seg}, out.data());
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  // Plain greedy decoding: the prompt, then one token per pass. rows[i] chose tokens[i].
  struct Run {
    std::vector<int32_t> tokens;
    std::vector<float> rows;
    std::unique_ptr<model::SequenceState> state;
  };
  Run Plain() {
    Run run;
    run.state = NewState();
    std::vector<float> row = Feed(run.state.get(), prompt_, model::Logits::kLast);
    while (true) {
      run.rows.insert(run.rows.end(), row.begin(), row.end());
      run.tokens.push_back(Argmax(row.data(), V_));
      if (run.tokens.size() == kGenerate) break;
      row = Feed(run.state.get(), {run.tokens.back()}, model::Logits::kLast);
    }
    return run;
  }

  // Speculative greedy decoding: drafts are the plain run's tokens, except that the one for
  // output position p is wrong when wrong(p); k cycles through 1, 2, 3.
  Run Speculative(const std::vector<int32_t>& oracle, const std::function<bool(int)>& wrong) {
    Run run;
    run.state = NewState();
    std::vector<float> row = Feed(run.state.get(), prompt_, model::Logits::kLast);
    run.rows = row;
    run.tokens.push_back(Argmax(row.data(), V_));
    int step = 0;
    while (run.tokens.size() < kGenerate) {
      const int k = 1 + step++ % 3;
      std::vector<int32_t> fed = {run.tokens.back()};
      for (int i = 0; i < k; ++i) {
        const int p = static_cast<int>(run.tokens.size()) + i;  // the output position drafted
        if (p >= static_cast<int>(oracle.size())) break;
        fed.push_back(wrong(p) ? (oracle[p] + 1) % static_cast<int32_t>(V_) : oracle[p]);
      }
      const std::vector<float> rows =
          Feed(run.state.get(), fed, model::Logits::kAll, /*keep_states=*/true);
      int64_t kept = 0;
      for (size_t r = 0; r < fed.size(); ++r) {
        const float* l = rows.data() + r * V_;
        run.rows.insert(run.rows.end(), l, l + V_);
        run.tokens.push_back(Argmax(l, V_));
        ++kept;
        if (run.tokens.size() == kGenerate) break;
        if (r + 1 == fed.size() || run.tokens.back() != fed[r + 1]) break;
      }
      absl::Status s = run.state->Rollback(kept);
      EXPECT_TRUE(s.ok()) << s;
    }
    return run;
  }

  void ExpectSameRun(const Run& got, const Run& want, const std::string& what) {
    ASSERT_EQ(got.tokens, want.tokens) << what;
    for (size_t r = 0; r < want.tokens.size(); ++r) {
      ASSERT_EQ(
          std::memcmp(got.rows.data() + r * V_, want.rows.data() + r * V_, V_ * sizeof(float)), 0)
          << what << ": logit row " << r << " differs";
    }
    // The state: same length, same delta-net states (and MTP input row), same KV rows.
    ASSERT_EQ(got.state->n_past(), want.state->n_past()) << what;
    ASSERT_EQ(got.state->next_position(), want.state->next_position()) << what;
    EXPECT_EQ(got.state->mtp_past(), want.state->mtp_past()) << what;
    const model::StateSize& size = want.state->size();
    std::vector<uint8_t> a(size.recurrent_bytes + size.conv_bytes), b(a.size());
    got.state->ExportRecurrent(a.data());
    want.state->ExportRecurrent(b.data());
    EXPECT_TRUE(a == b) << what << ": recurrent states differ";
    const int64_t n = want.state->n_past();
    std::vector<uint8_t> ka(size.kv_bytes_per_token * n), kb(ka.size());
    got.state->ExportKv(0, n, ka.data());
    want.state->ExportKv(0, n, kb.data());
    EXPECT_TRUE(ka == kb) << what << ": KV caches differ";
  }

  LoadedModel m_;
  int64_t V_ = 0;
  std::vector<int32_t> prompt_;
  ThreadPool pool_{2};
  ops::ComputeContext ctx_{&pool_, ops::MathMode::kFast};
};

TEST_P(SpeculativeModel, VerifyAndRollbackGivePlainDecodingsBits) {
  const Run plain = Plain();
  ASSERT_EQ(plain.tokens.size(), static_cast<size_t>(kGenerate));
  ExpectSameRun(Speculative(plain.tokens, [](int) { return false; }), plain, "oracle drafts");
  ExpectSameRun(Speculative(plain.tokens, [](int p) { return p % 4 == 2; }), plain,
                "every fourth draft wrong");
  ExpectSameRun(Speculative(plain.tokens, [](int p) { return p % 2 == 1; }), plain,
                "every other draft wrong");
  ExpectSameRun(Speculative(plain.tokens, [](int) { return true; }), plain, "all drafts wrong");
}

TEST_P(SpeculativeModel, RollbackNeedsAVerifyPass) {
  auto state = NewState();
  Feed(state.get(), prompt_, model::Logits::kLast);
  EXPECT_EQ(state->Rollback(1).code(), absl::StatusCode::kFailedPrecondition);
  Feed(state.get(), {1, 2, 3}, model::Logits::kAll, /*keep_states=*/true);
  EXPECT_EQ(state->Rollback(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state->Rollback(4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(state->Rollback(2).ok());
  EXPECT_EQ(state->n_past(), static_cast<int64_t>(prompt_.size()) + 2);
  // Once only.
  EXPECT_EQ(state->Rollback(1).code(), absl::StatusCode::kFailedPrecondition);
}

const Fixture kFixtures[] = {
    {"f32", "tiny-qwen35-f32.gguf", false},
    {"f16", "tiny-qwen35-f16.gguf", false},
    {"q8_0", "tiny-qwen35-q8_0.gguf", false},
    {"q4_k_m", "tiny-qwen35-q4_k_m.gguf", false},
    {"q3_k_m", "tiny-qwen35-q3_k_m.gguf", false},
    {"mtp", "tiny-qwen35-mtp-q3_k_m.gguf", true},
    {"ollama_mtp", "tiny-qwen35-ollama-q3_k_m.gguf", true},
};
INSTANTIATE_TEST_SUITE_P(Fixtures, SpeculativeModel, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return std::string(info.param.name); });

// The MTP head: loaded from both layouts, drafting greedily from the trunk's state.
class MtpHead : public ::testing::Test {
 protected:
  static std::vector<int32_t> Prompt(int64_t vocab) {
    return RandomTokens(33, 11, static_cast<int32_t>(vocab));
  }
  // Feeds the prompt in chunks of `chunk` with the head caught up, then drafts `k` tokens after
  // `next`; returns the drafts and their logits.
  static void Draft(model::Model& m, ops::ComputeContext& ctx, int64_t chunk, int32_t next, int k,
                    std::vector<int32_t>* drafts, std::vector<float>* logits,
                    std::vector<uint8_t>* trunk_before = nullptr,
                    std::vector<uint8_t>* trunk_after = nullptr, int64_t draft_vocab = 0) {
    const std::vector<int32_t> prompt = Prompt(m.config().n_vocab);
    auto st = m.NewState(128);
    ASSERT_TRUE(st.ok());
    model::SequenceState& state = **st;
    std::vector<float> out(m.config().n_vocab);
    for (size_t p = 0; p < prompt.size(); p += chunk) {
      const size_t n = std::min<size_t>(chunk, prompt.size() - p);
      model::Segment seg{&state, absl::MakeConstSpan(prompt.data() + p, n), model::Logits::kLast};
      seg.mtp = true;
      ASSERT_TRUE(m.Forward(ctx, {seg}, out.data()).ok());
    }
    ASSERT_EQ(state.mtp_past(), state.n_past());
    const model::StateSize& size = state.size();
    auto trunk = [&](std::vector<uint8_t>* bytes) {
      if (bytes == nullptr) return;
      bytes->resize(size.recurrent_bytes + size.conv_bytes +
                    size.kv_bytes_per_token * state.n_past());
      state.ExportRecurrent(bytes->data());
      state.ExportKv(0, state.n_past(), bytes->data() + size.recurrent_bytes + size.conv_bytes);
    };
    trunk(trunk_before);
    model::DraftSlot slot{&state, next, k, drafts, logits};
    absl::Status s = m.MtpDraft(ctx, {slot}, draft_vocab);
    ASSERT_TRUE(s.ok()) << s;
    trunk(trunk_after);
  }
  ThreadPool pool_{2};
  ops::ComputeContext ctx_{&pool_, ops::MathMode::kFast};
};

TEST_F(MtpHead, LoadsFromBothLayoutsAndOnlyWhenPresent) {
  LoadedModel plain = LoadModel("models/tiny-qwen35-q3_k_m.gguf");
  LoadedModel llama = LoadModel("models/tiny-qwen35-mtp-q3_k_m.gguf");
  LoadedModel ollama = LoadModel("models/tiny-qwen35-ollama-q3_k_m.gguf");
  ASSERT_NE(plain.model, nullptr);
  ASSERT_NE(llama.model, nullptr);
  ASSERT_NE(ollama.model, nullptr);
  EXPECT_FALSE(plain.model->has_mtp());
  EXPECT_TRUE(llama.model->has_mtp());
  EXPECT_TRUE(ollama.model->has_mtp());
  // A file without the head keeps today's state: no extra KV layer, no input row.
  const model::StateSize p =
      model::SequenceState::SizeFor(plain.model->config(), 16, model::KvType::kF16);
  const model::StateSize l =
      model::SequenceState::SizeFor(llama.model->config(), 16, model::KvType::kF16);
  const auto& c = plain.model->config();
  EXPECT_EQ(p.kv_bytes_per_token, static_cast<size_t>(c.n_attention_layers()) * 2 * c.kv_dim() * 2);
  EXPECT_EQ(l.kv_bytes_per_token,
            p.kv_bytes_per_token / c.n_attention_layers() * (c.n_attention_layers() + 1));
  EXPECT_EQ(l.recurrent_bytes, p.recurrent_bytes + c.n_embd * sizeof(float) + sizeof(int64_t));
  auto st = plain.model->NewState(16);
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE((*st)->has_mtp());
  std::vector<int32_t> drafts;
  model::DraftSlot slot{st->get(), 1, 1, &drafts};
  EXPECT_EQ(plain.model->MtpDraft(ctx_, {slot}).code(), absl::StatusCode::kFailedPrecondition);

  // Ollama's unshifted norms get their +1: the two files' heads agree.
  const int64_t E = c.n_embd;
  for (int i = 0; i < E; ++i) {
    ASSERT_NEAR(llama.model->mtp().enorm[i], ollama.model->mtp().enorm[i], 1e-6f) << i;
    ASSERT_NEAR(llama.model->mtp().hnorm[i], ollama.model->mtp().hnorm[i], 1e-6f) << i;
    ASSERT_NEAR(llama.model->mtp().shared_head_norm[i], ollama.model->mtp().shared_head_norm[i],
                1e-6f)
        << i;
    ASSERT_NEAR(llama.model->mtp().block.attn_norm[i], ollama.model->mtp().block.attn_norm[i],
                1e-6f)
        << i;
  }
  std::vector<int32_t> d1, d2;
  std::vector<float> l1, l2;
  Draft(*llama.model, ctx_, 64, 5, 3, &d1, &l1);
  Draft(*ollama.model, ctx_, 64, 5, 3, &d2, &l2);
  EXPECT_EQ(d1, d2);
  ASSERT_EQ(l1.size(), l2.size());
  for (size_t i = 0; i < l1.size(); ++i) ASSERT_NEAR(l1[i], l2[i], 1e-3f) << i;
}

TEST_F(MtpHead, DraftsDependOnTheSequenceNotOnHowItWasFed) {
  LoadedModel m = LoadModel("models/tiny-qwen35-mtp-q3_k_m.gguf");
  ASSERT_NE(m.model, nullptr);
  std::vector<int32_t> whole, one, seven;
  std::vector<float> lw, l1, l7;
  std::vector<uint8_t> before, after;
  Draft(*m.model, ctx_, 64, 9, 3, &whole, &lw, &before, &after);
  ASSERT_EQ(whole.size(), 3u);
  ASSERT_EQ(lw.size(), 3u * m.model->config().n_vocab);
  for (float x : lw) ASSERT_TRUE(std::isfinite(x));
  // Drafting leaves the trunk (and the head's caught-up cells) as they were.
  EXPECT_TRUE(before == after);
  Draft(*m.model, ctx_, 1, 9, 3, &one, &l1);
  Draft(*m.model, ctx_, 7, 9, 3, &seven, &l7);
  EXPECT_EQ(one, whole);
  EXPECT_EQ(seven, whole);
  EXPECT_TRUE(l1 == lw);
  EXPECT_TRUE(l7 == lw);
  // A draft of one is the first of a draft of three.
  std::vector<int32_t> single;
  std::vector<float> ls;
  Draft(*m.model, ctx_, 64, 9, 1, &single, &ls);
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0], whole[0]);
  EXPECT_TRUE(std::equal(ls.begin(), ls.end(), lw.begin()));
}

// Rows a sequence's head puts aside while it does not draft (Segment::mtp_defer), run later in
// one batch, give the head the same keys, values and input row, bit for bit, as running them at
// every pass: through decode steps, a verify segment cut back by Rollback(), and the cap on rows
// waiting. A head behind by such rows does not draft until they ran; a pass without the head
// leaves it behind for good.
TEST_F(MtpHead, DeferredRowsGiveTheHeadTheSameBits) {
  for (const char* path :
       {"models/tiny-qwen35-mtp-q3_k_m.gguf", "models/tiny-qwen35-ollama-q3_k_m.gguf"}) {
    SCOPED_TRACE(path);
    LoadedModel m = LoadModel(path);
    ASSERT_NE(m.model, nullptr);
    model::Model& model = *m.model;
    const int64_t V = model.config().n_vocab;
    const std::vector<int32_t> prompt = Prompt(V);
    const int64_t n_ctx = static_cast<int64_t>(prompt.size()) + model::kMaxMtpDeferredRows + 64;
    auto a_or = model.NewState(n_ctx), b_or = model.NewState(n_ctx);
    ASSERT_TRUE(a_or.ok() && b_or.ok());
    model::SequenceState& a = **a_or;  // the head runs with every pass
    model::SequenceState& b = **b_or;  // it puts the decode steps' rows aside
    std::vector<float> la(V * prompt.size()), lb(la.size());  // the most rows a pass writes
    auto feed = [&](const std::vector<int32_t>& tokens, bool defer, bool keep_states) {
      const model::Logits logits = tokens.size() > 1 ? model::Logits::kAll : model::Logits::kLast;
      model::Segment sa{&a, absl::MakeConstSpan(tokens), logits};
      model::Segment sb{&b, absl::MakeConstSpan(tokens), logits};
      sa.mtp = sb.mtp = true;
      sa.keep_states = sb.keep_states = keep_states;
      sb.mtp_defer = defer;
      ASSERT_TRUE(model.Forward(ctx_, {sa}, la.data()).ok());
      ASSERT_TRUE(model.Forward(ctx_, {sb}, lb.data()).ok());
      ASSERT_EQ(std::memcmp(la.data(), lb.data(), tokens.size() * V * sizeof(float)), 0);
    };
    auto same_heads = [&](const std::string& what) {
      ASSERT_EQ(a.n_past(), b.n_past()) << what;
      ASSERT_EQ(a.mtp_past(), b.mtp_past()) << what;
      ASSERT_EQ(b.mtp_deferred(), 0) << what;
      const model::StateSize& size = a.size();
      std::vector<uint8_t> ra(size.recurrent_bytes + size.conv_bytes), rb(ra.size());
      a.ExportRecurrent(ra.data());  // with the head's input row and mtp_past()
      b.ExportRecurrent(rb.data());
      EXPECT_TRUE(ra == rb) << what << ": recurrent states or the head's input rows differ";
      std::vector<uint8_t> ka(size.kv_bytes_per_token * a.n_past()), kb(ka.size());
      a.ExportKv(0, a.n_past(), ka.data());  // with the head's KV layer
      b.ExportKv(0, b.n_past(), kb.data());
      EXPECT_TRUE(ka == kb) << what << ": KV caches differ";
      std::vector<int32_t> da, db;
      std::vector<float> ga, gb;
      ASSERT_TRUE(model.MtpDraft(ctx_, {{&a, 5, 3, &da, &ga}}).ok());
      ASSERT_TRUE(model.MtpDraft(ctx_, {{&b, 5, 3, &db, &gb}}).ok());
      EXPECT_EQ(da, db) << what;
      EXPECT_TRUE(ga == gb) << what << ": draft logits differ";
    };

    feed(prompt, /*defer=*/true, false);  // a prompt's rows: deferred too when asked
    int32_t next = 7;
    for (int step = 0; step < 12; ++step) {
      feed({next}, /*defer=*/true, false);
      next = static_cast<int32_t>((next * 31 + 17) % V);
    }
    EXPECT_EQ(b.mtp_deferred(), static_cast<int64_t>(prompt.size()) + 12);
    EXPECT_TRUE(b.mtp_follows());
    EXPECT_LT(b.mtp_past(), b.n_past());
    std::vector<int32_t> drafts;
    EXPECT_EQ(model.MtpDraft(ctx_, {{&b, 5, 1, &drafts, nullptr}}).code(),
              absl::StatusCode::kFailedPrecondition);
    model::SequenceState* behind[] = {&b};
    ASSERT_TRUE(model.MtpCatchUpDeferred(ctx_, behind).ok());
    same_heads("after 12 deferred decode steps");

    // A verify segment whose rows are put aside, cut back to its first token, then more steps.
    feed({next, 1, 2, 3}, /*defer=*/true, /*keep_states=*/true);
    ASSERT_TRUE(a.Rollback(1).ok());
    ASSERT_TRUE(b.Rollback(1).ok());
    EXPECT_EQ(b.mtp_deferred(), 1);
    for (int step = 0; step < 5; ++step) feed({static_cast<int32_t>(step + 40)}, true, false);
    // A pass that runs the head takes the rows put aside first.
    feed({11, 12}, /*defer=*/false, false);
    same_heads("after a cut verify segment and a pass that runs the head");

    // No more than kMaxMtpDeferredRows wait: the pass that would exceed it runs the head.
    for (int64_t step = 0; step < model::kMaxMtpDeferredRows; ++step) {
      feed({static_cast<int32_t>(step % V)}, true, false);
    }
    EXPECT_EQ(b.mtp_deferred(), model::kMaxMtpDeferredRows);
    feed({13}, true, false);
    EXPECT_EQ(b.mtp_deferred(), 0);
    same_heads("at the cap");

    // A pass without the head leaves it behind, and its rows go.
    feed({14}, true, false);
    const std::vector<int32_t> token = {15};
    model::Segment plain{&b, absl::MakeConstSpan(token), model::Logits::kLast};
    ASSERT_TRUE(model.Forward(ctx_, {plain}, lb.data()).ok());
    EXPECT_EQ(b.mtp_deferred(), 0);
    EXPECT_LT(b.mtp_past(), b.n_past());
    EXPECT_FALSE(b.mtp_follows());
  }
}

// A restricted draft vocabulary (Model::MtpDraft's draft_vocab): each draft is the argmax of
// the whole vocabulary's draft logits over the ids below the limit (rounded up to 16) and the
// control and user-defined tokens, ties to the lowest id; asking for logits gets them all.
TEST_F(MtpHead, RestrictedDraftVocabularyIsTheArgmaxOverItsIds) {
  LoadedModel m = LoadModel("models/tiny-qwen35-mtp-q3_k_m.gguf");
  ASSERT_NE(m.model, nullptr);
  const int64_t V = m.model->config().n_vocab;
  auto types = m.model->file().GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status();
  std::vector<bool> allowed(V, false);
  const int64_t limit = 200, rounded = 208;  // of the fixture's 1024 ids
  int64_t specials_above = 0;
  for (int64_t id = 0; id < V; ++id) {
    const bool special =
        id < static_cast<int64_t>(types->size()) && ((*types)[id] == 3 || (*types)[id] == 4);
    allowed[id] = id < rounded || special;
    if (special && id >= rounded) ++specials_above;
  }
  ASSERT_GT(specials_above, 0) << "the fixture's vocabulary has control tokens at its end";
  int differ = 0;
  for (int32_t next : {9, 100, 300, 500, 700, 900, 1000, 1010}) {
    ASSERT_LT(next, V);
    std::vector<int32_t> full, restricted, with_logits;
    std::vector<float> logits, logits_restricted;
    Draft(*m.model, ctx_, 64, next, 1, &full, &logits);
    Draft(*m.model, ctx_, 64, next, 1, &restricted, nullptr, nullptr, nullptr, limit);
    ASSERT_EQ(restricted.size(), 1u);
    int32_t best = -1;
    for (int64_t id = 0; id < V; ++id) {
      if (allowed[id] && (best < 0 || logits[id] > logits[best])) best = static_cast<int32_t>(id);
    }
    EXPECT_EQ(restricted[0], best) << "after token " << next;
    differ += restricted[0] != full[0];
    // Asking for the logits gets the whole vocabulary's, and its argmax.
    Draft(*m.model, ctx_, 64, next, 1, &with_logits, &logits_restricted, nullptr, nullptr, limit);
    EXPECT_EQ(with_logits, full);
    EXPECT_TRUE(logits_restricted == logits);
  }
  // Random weights put the whole vocabulary's argmax outside the first 208 ids most of the time:
  // the restriction is not vacuous.
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace qwen::testing
