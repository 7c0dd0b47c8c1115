// `qwen synth`: write a full-size GGUF with random weights for benchmarks.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/flags_util.h"
#include "cli/synthetic_model.h"

ABSL_FLAG(std::string, shape, "qwen3.5-4b", "Model shape: qwen3.5-4b or tiny.");
ABSL_FLAG(std::string, type, "q3_k_m", "Weight type mix: q3_k_m, q4_k_m or q8_0.");
ABSL_FLAG(std::string, out, "", "Output GGUF path.");
ABSL_FLAG(std::string, vocab, "builtin",
          "GGUF whose tokenizer vocabulary is copied (padded to the model's vocabulary size); "
          "\"builtin\": the Qwen3 vocabulary built into qwen; empty for byte tokens only.");
ABSL_FLAG(std::string, template_file, "builtin",
          "Chat template file stored as tokenizer.chat_template; \"builtin\": Qwen3.5's, built "
          "into qwen; empty for none.");
ABSL_FLAG(uint64_t, synth_seed, 1, "Seed of the random weights.");
ABSL_FLAG(bool, mtp, false,
          "Append one MTP (multi-token-prediction) block as llama.cpp stores it, for speculative "
          "decoding (qwen bench --only speculative).");
ABSL_FLAG(std::string, mmproj_type, "f16",
          "With --mmproj: the vision tower's matrix type, f16, bf16, f32 or q8_0.");

namespace qwen::cli {

int RunSynth(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "synth",
      "qwen synth --shape qwen3.5-4b --type q3_k_m [--mtp] --out FILE\n"
      "qwen synth --shape qwen3.5-4b --mmproj FILE [--mmproj_type f16]\n"
      "Writes a GGUF with the model's real shapes, metadata and type mix and random weights: "
      "the text model (--out) and/or its vision tower (--mmproj).",
      argc, argv, {"mmproj_flag"});
  const std::string out = absl::GetFlag(FLAGS_out);
  const std::string mmproj = absl::GetFlag(FLAGS_mmproj);
  if ((out.empty() && mmproj.empty()) || !args.empty()) {
    std::fprintf(stderr,
                 "usage: qwen synth --shape qwen3.5-4b [--type q3_k_m --out FILE] "
                 "[--mmproj FILE --mmproj_type f16]\n");
    return 2;
  }
  if (!mmproj.empty()) {
    SynthOptions v;
    v.shape = absl::GetFlag(FLAGS_shape);
    v.type = absl::GetFlag(FLAGS_mmproj_type);
    v.seed = absl::GetFlag(FLAGS_synth_seed);
    absl::Status s = WriteSyntheticMmproj(v, mmproj);
    if (!s.ok()) {
      std::fprintf(stderr, "qwen synth: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    std::printf("%s\n", mmproj.c_str());
    if (out.empty()) return 0;
  }
  SynthOptions o;
  o.shape = absl::GetFlag(FLAGS_shape);
  o.type = absl::GetFlag(FLAGS_type);
  o.vocab_gguf = absl::GetFlag(FLAGS_vocab);
  o.chat_template_file = absl::GetFlag(FLAGS_template_file);
  o.seed = absl::GetFlag(FLAGS_synth_seed);
  o.mtp = absl::GetFlag(FLAGS_mtp);
  absl::Status s = WriteSyntheticModel(o, out);
  if (!s.ok()) {
    std::fprintf(stderr, "qwen synth: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

}  // namespace qwen::cli
