// `qwen generate`: run the model on a prompt and print the continuation.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/common_flags.h"
#include "cli/engine_flags.h"
#include "cli/flags_util.h"
#include "cli/generate_video.h"
#include "cli/video_flags.h"
#include "inference/chat/chat_template.h"
#include "inference/chat/output_parser.h"
#include "inference/common/status_macros.h"
#include "inference/common/thread_pool.h"
#include "inference/gguf/gguf_file.h"
#include "inference/grammar/spec.h"
#include "inference/model/model.h"
#include "inference/multimodal/image_prompt.h"
#include "inference/multimodal/video_prompt.h"
#include "inference/sampling/sampler.h"
#include "inference/tokenizer/tokenizer.h"
#include "inference/vision/vision.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, prompt, "", "Prompt text (special tokens such as <|im_start|> recognised).");
ABSL_FLAG(std::string, chat, "",
          "A chat request JSON file ({\"messages\", \"tools\", \"enable_thinking\", ...}) rendered "
          "with the model's chat template; the output is split into reasoning, content and tool "
          "calls.");
ABSL_FLAG(int32_t, max_tokens, 32, "Tokens to generate at most.");
ABSL_FLAG(double, temperature, 0.8, "Sampling temperature; 0 is greedy.");
ABSL_FLAG(int32_t, top_k, 40, "Keep the k most likely tokens (0: off).");
ABSL_FLAG(double, top_p, 0.95, "Nucleus sampling mass (1: off).");
ABSL_FLAG(double, min_p, 0.05, "Drop tokens below min_p x the top probability (0: off).");
ABSL_FLAG(uint64_t, seed, 0, "Random seed of the sampler.");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating after an end-of-generation token.");
ABSL_FLAG(std::string, dump_logits, "",
          "Write float32 rows of n_vocab logits to this file: one after each prompt token and one "
          "after each generated token (the fixtures' *.logits.f32 layout).");
ABSL_FLAG(std::string, teacher_force, "",
          "Comma-separated token ids fed after the prompt instead of sampled ones.");
ABSL_FLAG(bool, reference_math, false,
          "Compute every product in float32 from dequantized weights (slow; for checking).");
ABSL_FLAG(int32_t, batch, 512, "Prompt tokens per forward pass while prefilling.");
ABSL_FLAG(std::vector<std::string>, image, {},
          "Image files (JPEG, PNG, WebP; comma-separated), needs --mmproj. Each fills one image "
          "placeholder of the prompt in order: an image part ({\"type\": \"image\"}) of a --chat "
          "message, or <|vision_start|><|image_pad|><|vision_end|> in --prompt.");
ABSL_FLAG(std::vector<std::string>, video, {},
          "Video files (MP4 or MOV, WebM or MKV with H.264, HEVC, VP8, VP9 or AV1; animated GIF; "
          "comma-separated), needs --mmproj. Each fills one video placeholder of the prompt in "
          "order: a video part ({\"type\": \"video\"}) of a --chat message, or "
          "<|vision_start|><|video_pad|><|vision_end|> in --prompt. Frames are sampled and sized "
          "as the model's processor does, within the --video_* flags.");
ABSL_FLAG(std::string, json_schema, "",
          "Structured output: a JSON schema file; the output is an instance of it.");
ABSL_FLAG(std::string, regex, "", "Structured output: the output matches this regular expression.");
ABSL_FLAG(std::string, choices, "",
          "Structured output: the output is one of these comma-separated strings.");
ABSL_FLAG(std::string, grammar, "", "Structured output: a GBNF grammar file (start rule root).");
ABSL_FLAG(std::string, tool_calls, "",
          "Structured output with --chat and tools: \"required\" (tool calls only) or \"auto\" "
          "(text, then valid tool calls).");

namespace qwen::cli {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& flag, const std::string& s) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(s, absl::ByAnyChar(", []\n\t"), absl::SkipEmpty())) {
    int32_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": \"", part, "\" is not a token id"));
    }
    ids.push_back(v);
  }
  return ids;
}

// Token ids that end a generation: eos_token_id and, in Ollama's files, eos_token_ids.
std::vector<int32_t> EndOfGenerationIds(const gguf::GgufFile& file) {
  std::vector<int32_t> ids;
  if (auto eos = file.GetU32("tokenizer.ggml.eos_token_id"); eos.ok()) {
    ids.push_back(static_cast<int32_t>(*eos));
  }
  if (auto more = file.GetIntArray("tokenizer.ggml.eos_token_ids"); more.ok()) {
    for (int64_t v : *more) ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

absl::Status Generate() {
  ASSIGN_OR_RETURN(const ModelFiles model_files, ResolveModelFlag());
  const std::string& path = model_files.model_path;
  const std::string prompt_text = absl::GetFlag(FLAGS_prompt);
  const std::string chat_path = absl::GetFlag(FLAGS_chat);
  const int inputs =
      !absl::GetFlag(FLAGS_tokens).empty() + !prompt_text.empty() + !chat_path.empty();
  if (inputs != 1) {
    return absl::InvalidArgumentError("give exactly one of --tokens, --prompt and --chat");
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> teacher,
                   ParseIds("teacher_force", absl::GetFlag(FLAGS_teacher_force)));
  const int32_t batch = absl::GetFlag(FLAGS_batch);
  if (batch <= 0) return absl::InvalidArgumentError("--batch must be positive");
  const std::string kv_name = absl::GetFlag(FLAGS_kv_type);
  if (kv_name != "f16" && kv_name != "f32") {
    return absl::InvalidArgumentError("--kv_type must be f16 or f32");
  }

  const auto t_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file_owned, gguf::GgufFile::Open(path));
  std::shared_ptr<const gguf::GgufFile> file = std::move(file_owned);
  model::LoadOptions load_options;
  load_options.packed_dir = absl::GetFlag(FLAGS_packed_dir);
  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> model, model::Model::Load(file, load_options));
  if (const model::PackingReport& p = model->packing(); p.requested && !p.status.ok()) {
    std::fprintf(stderr, "qwen generate: no packed copy of the weights (slower): %s\n",
                 std::string(p.status.message()).c_str());
  }
  const int64_t V = model->config().n_vocab;

  // The prompt: ids as given, or text through the tokenizer (after the chat template).
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (auto t = tokenizer::Tokenizer::FromGguf(*file); t.ok()) {
    tok = std::move(*t);
  } else if (absl::GetFlag(FLAGS_tokens).empty()) {
    return t.status();
  }
  std::vector<int32_t> prompt;
  std::string rendered;
  nlohmann::ordered_json chat_request;
  if (!absl::GetFlag(FLAGS_tokens).empty()) {
    ASSIGN_OR_RETURN(prompt, ParseIds("tokens", absl::GetFlag(FLAGS_tokens)));
  } else if (!prompt_text.empty()) {
    rendered = prompt_text;
  } else {
    std::ifstream in(chat_path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--chat: cannot read ", chat_path));
    std::stringstream ss;
    ss << in.rdbuf();
    chat_request = nlohmann::ordered_json::parse(ss.str(), nullptr, false);
    if (chat_request.is_discarded() || !chat_request.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--chat: ", chat_path, " is not a JSON object"));
    }
    ASSIGN_OR_RETURN(auto tmpl, chat::ChatTemplate::FromGguf(*file));
    ASSIGN_OR_RETURN(rendered, tmpl->Render(chat_request));
  }
  // Videos: written into the prompt text as the model's processor does (a timestamp per frame
  // pair), before it is tokenized.
  const std::vector<std::string> video_paths = absl::GetFlag(FLAGS_video);
  const std::string mmproj_path = VisionTowerPath(model_files);
  std::shared_ptr<const vision::VisionEncoder> encoder;
  PromptVideos videos;
  if (!video_paths.empty()) {
    if (mmproj_path.empty()) {
      return absl::FailedPreconditionError(
          "--video needs a vision tower: --mmproj FILE (the mmproj GGUF made for this model), or "
          "a model file that bundles one (Ollama's)");
    }
    if (rendered.empty()) return absl::InvalidArgumentError("--video needs --prompt or --chat");
    ASSIGN_OR_RETURN(encoder, multimodal::LoadMmproj(mmproj_path, model->config()));
    ASSIGN_OR_RETURN(videos, PrepareVideos(video_paths, encoder, VideoSettingsFromFlags(),
                                           &rendered));
  }
  if (!rendered.empty()) prompt = tok->Encode(rendered, /*parse_special=*/true);
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");

  // Images: each placeholder becomes the image's tokens (grid from the image's size).
  const std::vector<std::string> image_paths = absl::GetFlag(FLAGS_image);
  std::vector<vision::RgbImage> images;
  std::vector<vision::ImageGrid> grids;
  std::vector<model::ImageSpan> spans;
  vision::PreprocessOptions image_options;
  image_options.min_pixels = absl::GetFlag(FLAGS_image_min_pixels);
  image_options.max_pixels = absl::GetFlag(FLAGS_image_max_pixels);
  if (!image_paths.empty() || !video_paths.empty()) {
    if (mmproj_path.empty()) {
      return absl::FailedPreconditionError(
          "--image needs a vision tower: --mmproj FILE (the mmproj GGUF made for this model), or "
          "a model file that bundles one (Ollama's)");
    }
    if (!tok) return absl::InvalidArgumentError("--image needs a model with a tokenizer");
    if (encoder == nullptr) {
      ASSIGN_OR_RETURN(encoder, multimodal::LoadMmproj(mmproj_path, model->config()));
    }
    ASSIGN_OR_RETURN(multimodal::ImageTokenIds ids, multimodal::FindImageTokenIds(*tok));
    if (!video_paths.empty() && ids.video_pad < 0) {
      return absl::FailedPreconditionError("--video: the vocabulary has no <|video_pad|> token");
    }
    for (const std::string& image_path : image_paths) {
      std::ifstream in(image_path, std::ios::binary);
      if (!in) return absl::NotFoundError(absl::StrCat("--image: cannot read ", image_path));
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string bytes = ss.str();
      ASSIGN_OR_RETURN(
          vision::RgbImage image,
          vision::DecodeImage(
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), {},
              absl::StrCat("--image ", image_path)));
      ASSIGN_OR_RETURN(vision::ImageGrid grid, vision::PlanGrid(image.width, image.height,
                                                                encoder->config(), image_options));
      images.push_back(std::move(image));
      grids.push_back(grid);
    }
    // Images and frame pairs widened in one pass (each placeholder to its tokens).
    ASSIGN_OR_RETURN(multimodal::VisionSpans vs,
                     multimodal::ExpandVisionPads(prompt, ids.image_pad, grids, ids.video_pad,
                                                  videos.PairGrids(), "--image/--video"));
    spans = std::move(vs.images);
    videos.SetSpans(vs.pairs);
  } else if (!mmproj_path.empty()) {
    // Checked even without images, so that a wrong file shows up at once.
    ASSIGN_OR_RETURN(encoder, multimodal::LoadMmproj(mmproj_path, model->config()));
  }

  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = AvailableCores();
  ThreadPool pool(threads);
  ops::ComputeContext ctx(&pool, absl::GetFlag(FLAGS_reference_math) ? ops::MathMode::kReference
                                                                     : ops::MathMode::kFast);
  // Image embeddings [n_tokens, n_embd] and the M-RoPE positions of the whole prompt.
  std::vector<vision::ImageEmbedding> embeddings;
  std::vector<const float*> embedding_rows;
  std::vector<int32_t> positions;
  const auto t_encode = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> pair_embeddings;
  if (!images.empty() || !videos.videos.empty()) {
    const int64_t E = model->config().n_embd;
    embedding_rows.assign(prompt.size(), nullptr);
    for (size_t k = 0; k < images.size(); ++k) {
      ASSIGN_OR_RETURN(vision::ImageEmbedding e, encoder->Encode(images[k], image_options, ctx));
      if (e.grid.n_tokens() != grids[k].n_tokens() ||
          e.data.size() != static_cast<size_t>(e.grid.n_tokens() * E)) {
        return absl::InternalError(
            absl::StrCat("--image ", image_paths[k], ": the encoder's grid differs from the plan"));
      }
      embeddings.push_back(std::move(e));
      for (int64_t i = 0; i < grids[k].n_tokens(); ++i) {
        embedding_rows[spans[k].offset + i] = embeddings.back().data.data() + i * E;
      }
    }
    std::vector<model::ImageSpan> all = spans;
    for (const PromptVideos::One& v : videos.videos) {
      for (size_t k = 0; k < v.spans.size(); ++k) {
        ASSIGN_OR_RETURN(std::vector<float> e, v.pairs->EncodePair(static_cast<int64_t>(k), ctx));
        pair_embeddings.push_back(std::move(e));
        for (int64_t i = 0; i < int64_t{v.spans[k].rows} * v.spans[k].cols; ++i) {
          embedding_rows[v.spans[k].offset + i] = pair_embeddings.back().data() + i * E;
        }
        all.push_back(v.spans[k]);
      }
    }
    std::sort(all.begin(), all.end(), [](const model::ImageSpan& a, const model::ImageSpan& b) {
      return a.offset < b.offset;
    });
    ASSIGN_OR_RETURN(positions,
                     model::MropePositions(static_cast<int64_t>(prompt.size()), all, 0, nullptr));
  }
  const double encode_s = Seconds(t_encode, std::chrono::steady_clock::now());
  const int32_t max_tokens =
      teacher.empty() ? absl::GetFlag(FLAGS_max_tokens) : static_cast<int32_t>(teacher.size());
  const int64_t needed = static_cast<int64_t>(prompt.size()) + max_tokens;
  const int64_t n_ctx = std::max<int64_t>(absl::GetFlag(FLAGS_ctx_size), needed);
  ASSIGN_OR_RETURN(
      std::unique_ptr<model::SequenceState> state,
      model->NewState(n_ctx, kv_name == "f16" ? model::KvType::kF16 : model::KvType::kF32));

  sampling::SamplingParams sp;
  sp.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  sp.top_k = absl::GetFlag(FLAGS_top_k);
  sp.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  sp.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  sp.seed = absl::GetFlag(FLAGS_seed);
  RETURN_IF_ERROR(sampling::Validate(sp, V));
  for (int32_t t : prompt) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens: token id ", t, " is outside the vocabulary [0, ", V, ")"));
    }
  }
  sampling::Sampler sampler(sp, V, prompt);
  const std::vector<int32_t> eog = tok ? tok->end_of_generation_ids() : EndOfGenerationIds(*file);

  // Structured output: one of --json_schema, --regex, --choices, --grammar, --tool_calls.
  std::unique_ptr<grammar::Matcher> matcher;
  {
    auto read_file = [](const std::string& flag,
                        const std::string& path) -> absl::StatusOr<std::string> {
      std::ifstream in(path, std::ios::binary);
      if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
      std::stringstream ss;
      ss << in.rdbuf();
      return ss.str();
    };
    grammar::ConstraintSpec spec;
    int formats = 0;
    std::string flag;
    if (!absl::GetFlag(FLAGS_json_schema).empty()) {
      ++formats, flag = "json_schema";
      spec.kind = grammar::ConstraintSpec::Kind::kJsonSchema;
      ASSIGN_OR_RETURN(spec.text, read_file(flag, absl::GetFlag(FLAGS_json_schema)));
    }
    if (!absl::GetFlag(FLAGS_regex).empty()) {
      ++formats, flag = "regex";
      spec.kind = grammar::ConstraintSpec::Kind::kRegex;
      spec.text = absl::GetFlag(FLAGS_regex);
    }
    if (!absl::GetFlag(FLAGS_choices).empty()) {
      ++formats, flag = "choices";
      spec.kind = grammar::ConstraintSpec::Kind::kChoices;
      spec.choices = absl::StrSplit(absl::GetFlag(FLAGS_choices), ',');
    }
    if (!absl::GetFlag(FLAGS_grammar).empty()) {
      ++formats, flag = "grammar";
      spec.kind = grammar::ConstraintSpec::Kind::kGrammar;
      ASSIGN_OR_RETURN(spec.text, read_file(flag, absl::GetFlag(FLAGS_grammar)));
    }
    if (!absl::GetFlag(FLAGS_tool_calls).empty()) {
      ++formats, flag = "tool_calls";
      const std::string mode = absl::GetFlag(FLAGS_tool_calls);
      if (mode != "auto" && mode != "required") {
        return absl::InvalidArgumentError("--tool_calls: must be auto or required");
      }
      if (!chat_request.contains("tools")) {
        return absl::InvalidArgumentError("--tool_calls: needs --chat with tools");
      }
      spec.kind = grammar::ConstraintSpec::Kind::kToolCalls;
      spec.tools_json = chat_request["tools"].dump();
      spec.tool_calls_required = mode == "required";
    }
    if (formats > 1) {
      return absl::InvalidArgumentError(
          "give at most one of --json_schema, --regex, --choices, --grammar, --tool_calls");
    }
    if (formats == 1) {
      if (!tok) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": needs a tokenizer"));
      spec.after_reasoning = !chat_path.empty() && chat::PromptOpensReasoning(rendered);
      grammar::GrammarCache cache(grammar::TokenTableFromTokenizer(*tok, static_cast<int32_t>(V)));
      absl::StatusOr<std::shared_ptr<grammar::CompiledGrammar>> g = cache.Get(spec);
      if (!g.ok()) return absl::InvalidArgumentError(absl::StrCat("--", g.status().message()));
      matcher = std::make_unique<grammar::Matcher>(*g);
    }
  }
  std::vector<uint64_t> mask(matcher ? matcher->grammar().mask_words() : 0);
  double constraint_s = 0;

  const std::string dump_path = absl::GetFlag(FLAGS_dump_logits);
  std::unique_ptr<FILE, int (*)(FILE*)> dump(nullptr, &std::fclose);
  if (!dump_path.empty()) {
    dump.reset(std::fopen(dump_path.c_str(), "wb"));
    if (!dump) return absl::FailedPreconditionError(absl::StrCat("cannot write ", dump_path));
  }
  const bool all_rows = static_cast<bool>(dump);
  std::vector<float> logits;
  auto write_rows = [&](int64_t rows) -> absl::Status {
    if (dump && std::fwrite(logits.data(), sizeof(float), rows * V, dump.get()) !=
                    static_cast<size_t>(rows * V)) {
      return absl::DataLossError(absl::StrCat("write to ", dump_path, " failed"));
    }
    return absl::OkStatus();
  };

  const auto t_loaded = std::chrono::steady_clock::now();
  for (size_t p = 0; p < prompt.size(); p += batch) {
    const size_t n = std::min<size_t>(batch, prompt.size() - p);
    const bool last_chunk = p + n == prompt.size();
    model::Segment seg{state.get(), absl::MakeConstSpan(prompt.data() + p, n),
                       all_rows     ? model::Logits::kAll
                       : last_chunk ? model::Logits::kLast
                                    : model::Logits::kNone};
    if (!positions.empty()) {
      seg.positions = absl::MakeConstSpan(positions.data() + 4 * p, 4 * n);
      seg.embeddings = absl::MakeConstSpan(embedding_rows.data() + p, n);
    }
    logits.resize(model::Model::LogitRows({seg}) * V);
    RETURN_IF_ERROR(model->Forward(ctx, {seg}, logits.data()));
    RETURN_IF_ERROR(write_rows(model::Model::LogitRows({seg})));
  }
  const auto t_prefilled = std::chrono::steady_clock::now();
  // `logits` ends with the row after the last prompt token.
  std::vector<int32_t> generated;
  std::string finish = "length";
  for (int32_t i = 0; i < max_tokens; ++i) {
    const float* last = logits.data() + logits.size() - V;
    int32_t next;
    if (matcher != nullptr && teacher.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      matcher->FillNextTokenMask(mask.data());
      if (matcher->CanEnd() && !absl::GetFlag(FLAGS_ignore_eos)) {
        for (int32_t t : eog) mask[t >> 6] |= uint64_t{1} << (t & 63);
      }
      if (std::all_of(mask.begin(), mask.end(), [](uint64_t w) { return w == 0; })) {
        finish = "constraint_done";
        break;
      }
      next = sampler.Sample(last, mask.data());
      const bool end = std::find(eog.begin(), eog.end(), next) != eog.end();
      if (!end && !matcher->AcceptToken(next)) {
        return absl::InternalError("the sampled token is not allowed by the constraint");
      }
      constraint_s += Seconds(t0, std::chrono::steady_clock::now());
    } else {
      next = teacher.empty() ? sampler.Sample(last) : teacher[i];
    }
    if (next < 0 || next >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("--teacher_force: token id ", next, " is outside the vocabulary"));
    }
    generated.push_back(next);
    const bool is_eog = std::find(eog.begin(), eog.end(), next) != eog.end();
    if (teacher.empty() && is_eog && !absl::GetFlag(FLAGS_ignore_eos)) {
      finish = "eos";
      break;
    }
    model::Segment seg{state.get(), absl::MakeConstSpan(&generated.back(), 1), model::Logits::kAll};
    logits.resize(V);
    RETURN_IF_ERROR(model->Forward(ctx, {seg}, logits.data()));
    RETURN_IF_ERROR(write_rows(1));
  }
  const auto t_done = std::chrono::steady_clock::now();

  const double prefill_s = Seconds(t_loaded, t_prefilled);
  const double decode_s = Seconds(t_prefilled, t_done);
  std::string text;
  if (tok) {
    // The end-of-generation token is not part of the answer.
    std::vector<int32_t> shown = generated;
    if (finish == "eos" && !shown.empty()) shown.pop_back();
    text = tok->Decode(shown);
  }
  nlohmann::ordered_json parsed;
  if (!chat_path.empty()) {
    chat::OutputParserOptions po;
    po.reasoning_open = chat::PromptOpensReasoning(rendered);
    if (chat_request.contains("tools")) po.tools = chat_request["tools"];
    parsed = chat::OutputParser::Parse(text, po).ToJson();
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json out;
    out["prompt_tokens"] = prompt;
    out["tokens"] = generated;
    if (tok) out["text"] = text;
    if (!parsed.is_null()) out["message"] = parsed;
    out["finish_reason"] = finish;
    if (!spans.empty()) {
      nlohmann::ordered_json jimages = nlohmann::ordered_json::array();
      for (size_t k = 0; k < spans.size(); ++k) {
        jimages.push_back({{"file", image_paths[k]},
                           {"width", images[k].width},
                           {"height", images[k].height},
                           {"token_offset", spans[k].offset},
                           {"tokens", grids[k].n_tokens()},
                           {"rows", grids[k].rows()},
                           {"cols", grids[k].cols()},
                           {"positions", multimodal::ImagePositions(grids[k])}});
      }
      out["images"] = std::move(jimages);
    }
    if (!videos.videos.empty()) out["videos"] = videos.ToJson();
    if (!spans.empty() || !videos.videos.empty()) out["encode_s"] = encode_s;
    out["timings"] = {{"load_s", Seconds(t_start, t_loaded)},
                      {"prefill_tokens_per_s", prompt.size() / std::max(prefill_s, 1e-9)},
                      {"decode_tokens_per_s", generated.size() / std::max(decode_s, 1e-9)}};
    if (matcher) out["timings"]["constraint_s"] = constraint_s;
    std::printf("%s\n",
                out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  } else {
    if (!parsed.is_null()) {
      std::printf(
          "%s\n",
          parsed.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
    } else if (!rendered.empty()) {
      std::printf("%s\n", text.c_str());
    } else {
      std::printf("%s\n", absl::StrJoin(generated, ",").c_str());
    }
    std::fprintf(stderr,
                 "[%zu prompt tokens in %.3f s (%.1f tok/s), %zu generated in %.3f s (%.1f tok/s), "
                 "finish: %s]\n",
                 prompt.size(), prefill_s, prompt.size() / std::max(prefill_s, 1e-9),
                 generated.size(), decode_s, generated.size() / std::max(decode_s, 1e-9),
                 finish.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "generate",
      "qwen generate --model M (--prompt TEXT | --tokens 1,2,3 | --chat request.json)\n"
      "              [--max-tokens N] [--temperature T] [--seed S]\n"
      "              [--mmproj VISION.gguf --image a.png,b.jpg --video c.mp4]\n"
      "              [--json_schema FILE | --regex RE | --choices a,b | --grammar FILE |\n"
      "               --tool_calls auto|required]\n"
      "Runs the model on the prompt and prints the continuation: token ids for --tokens, text\n"
      "for --prompt, {reasoning, content, tool_calls} for --chat (--json: all of it).",
      argc, argv, {"engine_flags", "video_flags"});
  if (!args.empty()) {
    std::fprintf(stderr, "qwen generate: unexpected argument \"%s\"\n", args[0].c_str());
    return 2;
  }
  absl::Status s = Generate();
  if (!s.ok()) {
    std::fprintf(stderr, "qwen generate: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  return 0;
}

}  // namespace qwen::cli
