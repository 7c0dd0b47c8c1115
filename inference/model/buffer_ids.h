// The activation buffers of Model's forward passes (model.cc, model_mtp.cc): internal.
#ifndef QWEN_INFERENCE_MODEL_BUFFER_IDS_H_
#define QWEN_INFERENCE_MODEL_BUFFER_IDS_H_

namespace qwen::model {

// Activation buffers of a forward pass, reused between calls.
enum BufferId {
  kX,         // [n, n_embd] residual stream
  kH,         // [n, n_embd] normalised input of a block
  kOut,       // [n, n_embd] output of a block
  kQFull,     // [n, n_head, 2, head_dim] query | gate
  kQ,         // [n, n_head, head_dim]
  kGate,      // [n, n_head, head_dim]
  kK,         // [n, n_head_kv, head_dim]
  kV,         // [n, n_head_kv, head_dim]
  kAttn,      // [n, n_head, head_dim]
  kMixed,     // [n, qkv] delta-net projection, the conv input
  kZ,         // [n, n_v, d]
  kAlpha,     // [n, n_v] then the log decay g
  kBeta,      // [n, n_v]
  kConv,      // [n, qkv] conv output
  kCore,      // [n, n_v, d] delta rule output
  kFfnGate,   // [n, n_ff]
  kFfnUp,     // [n, n_ff]
  kFinal,     // [rows, n_embd] final norm of the rows that need logits
  kObserve,   // copies for observers
  kHidden,    // [n, n_embd] final-normed rows of every token (verify and MTP passes)
  kMtpCat,    // [n, 2 * n_embd] the MTP head's input: normed embedding | normed hidden
  kMtpIn,     // [n, n_embd] hidden rows paired with the MTP head's tokens
  kMtpX,      // [n, n_embd] the MTP block's residual stream
  kMtpFinal,  // [n, n_embd] its shared-head-normed rows
  kMtpTmp,    // [n, n_embd] scratch of the MTP input
  kNumBuffers,
};

}  // namespace qwen::model

#endif  // QWEN_INFERENCE_MODEL_BUFFER_IDS_H_
