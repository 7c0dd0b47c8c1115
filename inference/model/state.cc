#include "inference/model/state.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace qwen::model {

absl::StatusOr<KvType> ParseKvType(absl::string_view name) {
  if (name == "f16") return KvType::kF16;
  if (name == "f32") return KvType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_type must be f16 or f32, not \"", name, "\""));
}

absl::string_view KvTypeName(KvType type) { return type == KvType::kF32 ? "f32" : "f16"; }

void SequenceState::FreeFloats::operator()(float* p) const { std::free(p); }

StateSize SequenceState::SizeFor(const ModelConfig& c, int64_t n_ctx, KvType kv_type) {
  StateSize s;
  const size_t elem = kv_type == KvType::kF16 ? 2 : 4;
  s.kv_bytes_per_token = static_cast<size_t>(c.n_kv_layers()) * 2 * c.kv_dim() * elem;
  s.kv_bytes_reserved = s.kv_bytes_per_token * static_cast<size_t>(n_ctx);
  s.recurrent_bytes = static_cast<size_t>(c.n_delta_layers()) * c.ssm_n_v * c.ssm_head_dim *
                      c.ssm_head_dim * sizeof(float);
  // The MTP head's input row and its count of valid cells.
  if (c.has_mtp) s.recurrent_bytes += c.n_embd * sizeof(float) + sizeof(int64_t);
  s.conv_bytes = static_cast<size_t>(c.n_delta_layers()) * (c.conv_kernel - 1) * c.ssm_qkv_dim() *
                 sizeof(float);
  const size_t row = static_cast<size_t>(c.n_embd) * sizeof(float);
  s.checkpoint_bytes = static_cast<size_t>(c.n_delta_layers()) * c.ssm_n_v * c.ssm_head_dim *
                           c.ssm_head_dim * sizeof(float) +
                       s.conv_bytes + (c.has_mtp ? row : 0);
  s.mtp_deferred_bytes = c.has_mtp ? kMaxMtpDeferredRows * (row + sizeof(int32_t)) : 0;
  return s;
}

absl::StatusOr<std::unique_ptr<SequenceState>> SequenceState::Create(const ModelConfig& c,
                                                                     int64_t n_ctx,
                                                                     KvType kv_type) {
  if (n_ctx <= 0) return absl::InvalidArgumentError("context size must be positive");
  std::unique_ptr<SequenceState> s(new SequenceState());
  s->n_ctx_ = n_ctx;
  s->kv_type_ = kv_type;
  s->n_attn_ = c.n_kv_layers();
  s->n_delta_ = c.n_delta_layers();
  s->n_head_kv_ = c.n_head_kv;
  s->head_dim_ = c.head_dim;
  s->size_ = SizeFor(c, n_ctx, kv_type);
  const size_t elem = kv_type == KvType::kF16 ? 2 : 4;
  s->kv_layer_bytes_ = static_cast<size_t>(c.kv_dim()) * n_ctx * elem;
  s->kv_mapping_bytes_ = s->kv_layer_bytes_ * 2 * s->n_attn_;
  if (s->kv_mapping_bytes_ > 0) {
    // Reserved, not committed: pages become resident as tokens are written.
    void* p = mmap(nullptr, s->kv_mapping_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot reserve ", s->kv_mapping_bytes_,
                                                       " bytes of KV cache for ", n_ctx,
                                                       " tokens: ", std::strerror(errno)));
    }
    s->kv_mapping_ = p;
  }
  s->conv_floats_ = static_cast<size_t>(c.conv_kernel - 1) * c.ssm_qkv_dim();
  s->ssm_floats_ = static_cast<size_t>(c.ssm_n_v) * c.ssm_head_dim * c.ssm_head_dim;
  const size_t conv_total = std::max<size_t>(1, s->conv_floats_ * s->n_delta_);
  const size_t ssm_total = std::max<size_t>(1, s->ssm_floats_ * s->n_delta_);
  s->conv_.reset(static_cast<float*>(std::calloc(conv_total, sizeof(float))));
  s->ssm_.reset(static_cast<float*>(std::calloc(ssm_total, sizeof(float))));
  if (!s->conv_ || !s->ssm_) {
    return absl::ResourceExhaustedError("cannot allocate the delta-net state");
  }
  if (c.has_mtp) s->mtp_hidden_.assign(c.n_embd, 0.0f);
  return s;
}

SequenceState::~SequenceState() {
  if (kv_mapping_ != nullptr) munmap(kv_mapping_, kv_mapping_bytes_);
}

void SequenceState::Reset() {
  n_past_ = 0;
  next_pos_ = 0;
  std::memset(conv_.get(), 0, conv_floats_ * n_delta_ * sizeof(float));
  std::memset(ssm_.get(), 0, ssm_floats_ * n_delta_ * sizeof(float));
  std::fill(mtp_hidden_.begin(), mtp_hidden_.end(), 0.0f);
  mtp_past_ = 0;
  ClearMtpDeferred();
  ck_tokens_ = 0;
}

void SequenceState::DeferMtp(const int32_t* tokens, const float* hidden, int64_t n) {
  mtp_deferred_tokens_.insert(mtp_deferred_tokens_.end(), tokens, tokens + n);
  mtp_deferred_hidden_.insert(mtp_deferred_hidden_.end(), hidden,
                              hidden + n * static_cast<int64_t>(mtp_hidden_.size()));
}

absl::Status SequenceState::ReserveCheckpoints(int64_t n) {
  if (n <= n_checkpoints_) return absl::OkStatus();
  try {
    ck_conv_.resize(static_cast<size_t>(n) * n_delta_ * conv_floats_);
    ck_ssm_.resize(static_cast<size_t>(n) * n_delta_ * ssm_floats_);
    ck_hidden_.resize(static_cast<size_t>(n) * mtp_hidden_.size());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the verify checkpoints of ", n, " tokens"));
  }
  n_checkpoints_ = n;
  return absl::OkStatus();
}

absl::Status SequenceState::Rollback(int64_t keep) {
  if (ck_tokens_ == 0 || n_past_ != ck_base_past_ + ck_tokens_) {
    return absl::FailedPreconditionError("no verify pass to roll back");
  }
  if (keep < 1 || keep > ck_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot keep ", keep, " of the ", ck_tokens_, " tokens just fed"));
  }
  if (keep < ck_tokens_) {
    const int64_t t = keep - 1;
    std::memcpy(conv_.get(), checkpoint_conv(0, t), conv_floats_ * n_delta_ * sizeof(float));
    std::memcpy(ssm_.get(), checkpoint_recurrent(0, t), ssm_floats_ * n_delta_ * sizeof(float));
    n_past_ = ck_base_past_ + keep;
    next_pos_ = ck_base_pos_ + keep;
    if (mtp_deferred() > 0 && mtp_past_ <= n_past_) {
      // The head is behind by rows put aside: those of the tokens cut go, the rest stay (their
      // hidden rows are the kept tokens' own), and its input row is still that of mtp_past().
      const int64_t kept = std::min(mtp_deferred(), n_past_ - mtp_past_);
      mtp_deferred_tokens_.resize(kept);
      mtp_deferred_hidden_.resize(kept * mtp_hidden_.size());
    } else {
      if (!mtp_hidden_.empty()) {
        std::memcpy(mtp_hidden_.data(), checkpoint_hidden(t), mtp_hidden_.size() * sizeof(float));
      }
      mtp_past_ = std::min(mtp_past_, n_past_);
      ClearMtpDeferred();
    }
  }
  ck_tokens_ = 0;
  return absl::OkStatus();
}

absl::Status SequenceState::CopyFrom(const SequenceState& other) {
  if (other.n_ctx_ != n_ctx_ || other.kv_type_ != kv_type_ || other.n_attn_ != n_attn_ ||
      other.n_delta_ != n_delta_ || other.conv_floats_ != conv_floats_ ||
      other.ssm_floats_ != ssm_floats_ || other.kv_layer_bytes_ != kv_layer_bytes_) {
    return absl::InvalidArgumentError("cannot copy a sequence state of a different shape");
  }
  // Only the positions in use, per layer and head.
  for (int l = 0; l < n_attn_; ++l) {
    const ops::KvView src = other.kv(l);
    const ops::KvView dst = kv(l);
    const size_t bytes = static_cast<size_t>(other.n_past_) * head_dim_ * src.elem_bytes();
    for (int g = 0; g < n_head_kv_; ++g) {
      std::memcpy(static_cast<uint8_t*>(dst.k) + dst.offset(g, 0),
                  static_cast<const uint8_t*>(src.k) + src.offset(g, 0), bytes);
      std::memcpy(static_cast<uint8_t*>(dst.v) + dst.offset(g, 0),
                  static_cast<const uint8_t*>(src.v) + src.offset(g, 0), bytes);
    }
  }
  std::memcpy(conv_.get(), other.conv_.get(), conv_floats_ * n_delta_ * sizeof(float));
  std::memcpy(ssm_.get(), other.ssm_.get(), ssm_floats_ * n_delta_ * sizeof(float));
  mtp_hidden_ = other.mtp_hidden_;
  mtp_past_ = other.mtp_past_;
  mtp_deferred_tokens_ = other.mtp_deferred_tokens_;
  mtp_deferred_hidden_ = other.mtp_deferred_hidden_;
  ck_tokens_ = 0;
  n_past_ = other.n_past_;
  next_pos_ = other.next_pos_;
  return absl::OkStatus();
}

void SequenceState::ExportKv(int64_t begin, int64_t end, uint8_t* dst) const {
  for (int l = 0; l < n_attn_; ++l) {
    const ops::KvView src = kv(l);
    const size_t bytes = static_cast<size_t>(end - begin) * head_dim_ * src.elem_bytes();
    for (const void* part : {src.k, src.v}) {
      for (int g = 0; g < n_head_kv_; ++g) {
        std::memcpy(dst, static_cast<const uint8_t*>(part) + src.offset(g, begin), bytes);
        dst += bytes;
      }
    }
  }
}

void SequenceState::ImportKv(int64_t begin, int64_t end, const uint8_t* src) {
  for (int l = 0; l < n_attn_; ++l) {
    const ops::KvView dst = kv(l);
    const size_t bytes = static_cast<size_t>(end - begin) * head_dim_ * dst.elem_bytes();
    for (void* part : {dst.k, dst.v}) {
      for (int g = 0; g < n_head_kv_; ++g) {
        std::memcpy(static_cast<uint8_t*>(part) + dst.offset(g, begin), src, bytes);
        src += bytes;
      }
    }
  }
}

void SequenceState::ExportRecurrent(uint8_t* dst) const {
  const size_t conv = conv_floats_ * n_delta_ * sizeof(float);
  std::memcpy(dst, conv_.get(), conv);
  dst += conv;
  std::memcpy(dst, ssm_.get(), ssm_floats_ * n_delta_ * sizeof(float));
  dst += ssm_floats_ * n_delta_ * sizeof(float);
  if (!mtp_hidden_.empty()) {
    std::memcpy(dst, mtp_hidden_.data(), mtp_hidden_.size() * sizeof(float));
    std::memcpy(dst + mtp_hidden_.size() * sizeof(float), &mtp_past_, sizeof(int64_t));
  }
}

void SequenceState::ImportRecurrent(const uint8_t* src) {
  const size_t conv = conv_floats_ * n_delta_ * sizeof(float);
  std::memcpy(conv_.get(), src, conv);
  src += conv;
  std::memcpy(ssm_.get(), src, ssm_floats_ * n_delta_ * sizeof(float));
  src += ssm_floats_ * n_delta_ * sizeof(float);
  if (!mtp_hidden_.empty()) {
    std::memcpy(mtp_hidden_.data(), src, mtp_hidden_.size() * sizeof(float));
    std::memcpy(&mtp_past_, src + mtp_hidden_.size() * sizeof(float), sizeof(int64_t));
  }
  ClearMtpDeferred();
  ck_tokens_ = 0;
}

ops::KvView SequenceState::kv(int attn_index) const {
  ops::KvView v;
  uint8_t* base = static_cast<uint8_t*>(kv_mapping_) + 2 * attn_index * kv_layer_bytes_;
  v.k = base;
  v.v = base + kv_layer_bytes_;
  v.f16 = kv_type_ == KvType::kF16;
  v.capacity = n_ctx_;
  v.n_head_kv = n_head_kv_;
  v.head_dim = head_dim_;
  return v;
}

}  // namespace qwen::model
