// `qwen generate`: run the model on a prompt and print the continuation.
#include <algorithm>
#include <atomic>
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
#include "absl/synchronization/notification.h"
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
#include "inference/engine/engine.h"
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
ABSL_FLAG(std::string, speculative, "auto",
          "Speculative decoding: auto (prompt lookup, else the MTP head when the file has one), "
          "off, mtp or ngram. The output is the same whatever the mode; --max_draft bounds the "
          "draft.");
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

// Collects one generation from the engine (called on its scheduler thread): the tokens, the
// logit rows (written to --dump-logits as they come) and the finish.
class GenerateSink : public engine::RequestSink {
 public:
  explicit GenerateSink(FILE* dump) : dump_(dump) {}

  void OnToken(const engine::TokenOutput& token) override { tokens.push_back(token.token); }
  void OnLogits(absl::Span<const float> rows) override {
    if (dump_ == nullptr || !write_status.ok()) return;
    if (std::fwrite(rows.data(), sizeof(float), rows.size(), dump_) != rows.size()) {
      write_status = absl::DataLossError("writing the logits failed");
    }
  }
  void OnFinish(const engine::FinishInfo& info) override {
    finish = info;
    done.Notify();
  }

  // Read after `done`.
  std::vector<int32_t> tokens;
  absl::Status write_status;
  engine::FinishInfo finish;
  absl::Notification done;

 private:
  FILE* const dump_;
};

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
  ASSIGN_OR_RETURN(const model::KvType kv_type, KvTypeFlag());

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
    ASSIGN_OR_RETURN(videos,
                     PrepareVideos(video_paths, encoder, VideoSettingsFromFlags(), &rendered));
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

  const int32_t max_tokens =
      teacher.empty() ? absl::GetFlag(FLAGS_max_tokens) : static_cast<int32_t>(teacher.size());
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
  const std::vector<int32_t> eog = tok ? tok->end_of_generation_ids() : EndOfGenerationIds(*file);

  // Structured output: one of --json_schema, --regex, --choices, --grammar, --tool_calls.
  std::shared_ptr<grammar::CompiledGrammar> compiled;
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
      compiled = *std::move(g);
    }
  }
  for (int32_t t : teacher) {
    if (t < 0 || t >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("--teacher_force: token id ", t, " is outside the vocabulary"));
    }
  }

  const std::string dump_path = absl::GetFlag(FLAGS_dump_logits);
  std::unique_ptr<FILE, int (*)(FILE*)> dump(nullptr, &std::fclose);
  if (!dump_path.empty()) {
    dump.reset(std::fopen(dump_path.c_str(), "wb"));
    if (!dump) return absl::FailedPreconditionError(absl::StrCat("cannot write ", dump_path));
  }

  // The engine runs the generation, as it does in the server: the mask, end-of-generation and
  // sampling steps are its own. One slot, no prefix cache; --batch is its prefill chunk.
  int threads = absl::GetFlag(FLAGS_threads);
  if (threads <= 0) threads = AvailableCores();
  engine::EngineOptions eo;
  eo.n_slots = 1;
  // Teacher forcing asks for one token past the given ones, whose step computes the row after
  // the last of them (then drops that token).
  const int32_t engine_max_tokens = teacher.empty() ? max_tokens : max_tokens + 1;
  eo.n_ctx = std::max<int64_t>(absl::GetFlag(FLAGS_ctx_size),
                               static_cast<int64_t>(prompt.size()) + engine_max_tokens + 1);
  eo.kv_type = kv_type;
  eo.n_threads = threads;
  eo.prefill_chunk = batch;
  eo.math = absl::GetFlag(FLAGS_reference_math) ? ops::MathMode::kReference : ops::MathMode::kFast;
  eo.reuse_prefix = false;
  eo.prefix_cache_bytes = 0;
  eo.max_draft = absl::GetFlag(FLAGS_max_draft);
  if (eo.max_draft < 0 || eo.max_draft > engine::kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_draft: must be between 0 and ", engine::kMaxDraftTokens));
  }
  eo.mtp_draft_vocab = absl::GetFlag(FLAGS_mtp_draft_vocab);
  if (eo.mtp_draft_vocab < 0) {
    return absl::InvalidArgumentError("--mtp_draft_vocab: must be 0 or more");
  }
  ASSIGN_OR_RETURN(const engine::SpeculativeMode speculative,
                   engine::ParseSpeculativeMode(absl::GetFlag(FLAGS_speculative), "--speculative"));
  if (speculative == engine::SpeculativeMode::kMtp && !model->has_mtp()) {
    return absl::InvalidArgumentError(
        "--speculative: mtp needs a model file with an MTP head, and this one has none");
  }
  std::shared_ptr<model::Model> shared_model = std::move(model);
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine,
                   engine::Engine::Create(shared_model, eo));

  engine::GenerationRequest req;
  req.id = 1;
  req.prompt = prompt;
  req.sampling = sp;
  req.max_tokens = engine_max_tokens;
  req.use_prefix_cache = false;
  req.all_logits = static_cast<bool>(dump);
  req.speculative = speculative;
  if (teacher.empty()) {
    // Given tokens are fed as they are: no constraint, no end of generation.
    req.grammar = compiled;
    if (!absl::GetFlag(FLAGS_ignore_eos)) req.stop_tokens = eog;
  } else {
    req.forced_tokens = teacher;
  }
  // Images: encoded by the engine before the prompt's first chunk; the time is measured here.
  auto encode_seconds = std::make_shared<std::atomic<double>>(0.0);
  std::shared_ptr<const vision::VisionEncoder> shared_encoder = std::move(encoder);
  for (size_t k = 0; k < images.size(); ++k) {
    engine::PromptImage pi;
    pi.offset = spans[k].offset;
    pi.rows = spans[k].rows;
    pi.cols = spans[k].cols;
    pi.encode = [encoder = shared_encoder, image = std::make_shared<vision::RgbImage>(images[k]),
                 image_options, encode_seconds, rows = pi.rows,
                 cols = pi.cols](ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
      const auto t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(vision::ImageEmbedding e, encoder->Encode(*image, image_options, ctx));
      if (e.grid.rows() != rows || e.grid.cols() != cols) {
        return absl::InternalError("--image: the encoder's grid differs from the plan");
      }
      encode_seconds->store(encode_seconds->load() + Seconds(t0, std::chrono::steady_clock::now()));
      return std::move(e.data);
    };
    req.images.push_back(std::move(pi));
  }
  // Frame pairs: encoded by the engine as the prompt reaches them, like images.
  for (const PromptVideos::One& v : videos.videos) {
    for (size_t k = 0; k < v.spans.size(); ++k) {
      engine::PromptImage pi;
      pi.offset = v.spans[k].offset;
      pi.rows = v.spans[k].rows;
      pi.cols = v.spans[k].cols;
      pi.encode = [pairs = v.pairs, k = static_cast<int64_t>(k),
                   encode_seconds](ops::ComputeContext& ctx) -> absl::StatusOr<std::vector<float>> {
        const auto t0 = std::chrono::steady_clock::now();
        ASSIGN_OR_RETURN(std::vector<float> e, pairs->EncodePair(k, ctx));
        encode_seconds->store(encode_seconds->load() +
                              Seconds(t0, std::chrono::steady_clock::now()));
        return e;
      };
      req.images.push_back(std::move(pi));
    }
  }
  // The engine takes images and frame pairs in prompt order.
  std::stable_sort(req.images.begin(), req.images.end(),
                   [](const engine::PromptImage& a, const engine::PromptImage& b) {
                     return a.offset < b.offset;
                   });
  auto sink = std::make_shared<GenerateSink>(dump.get());
  const auto t_loaded = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(engine->Submit(std::move(req), sink));
  sink->done.WaitForNotification();
  engine.reset();
  const engine::FinishInfo& info = sink->finish;
  if (!sink->write_status.ok()) return sink->write_status;
  if (dump != nullptr && std::fflush(dump.get()) != 0) {
    return absl::DataLossError(absl::StrCat("write to ", dump_path, " failed"));
  }
  if (info.reason == engine::FinishReason::kError) return info.status;
  std::vector<int32_t> generated = sink->tokens;
  if (!teacher.empty() && generated.size() > teacher.size()) generated.resize(teacher.size());
  std::string finish = "length";
  if (info.reason == engine::FinishReason::kStopToken) finish = "eos";
  if (info.reason == engine::FinishReason::kGrammarDone) finish = "constraint_done";
  const double encode_s = encode_seconds->load();
  const double constraint_s = absl::ToDoubleSeconds(info.constraint_time);
  const double prefill_s = absl::ToDoubleSeconds(info.time_to_first_token);
  const double decode_s = absl::ToDoubleSeconds(info.decode_time);
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
    if (compiled) out["timings"]["constraint_s"] = constraint_s;
    out["speculative"] = {{"mode", std::string(engine::SpeculativeModeName(speculative))},
                          {"drafted_tokens", info.drafted_tokens},
                          {"accepted_tokens", info.accepted_tokens}};
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
                 "finish: %s, %d of %d drafted tokens accepted]\n",
                 prompt.size(), prefill_s, prompt.size() / std::max(prefill_s, 1e-9),
                 generated.size(), decode_s, generated.size() / std::max(decode_s, 1e-9),
                 finish.c_str(), info.accepted_tokens, info.drafted_tokens);
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  std::vector<std::string> args = ParseFlags(
      "generate",
      "qwen generate --model M (--prompt TEXT | --tokens 1,2,3 | --chat request.json)\n"
      "              [--max-tokens N] [--temperature T] [--seed S]\n"
      "              [--speculative auto|off|mtp|ngram] [--max_draft K]\n"
      "              [--mmproj VISION.gguf --image a.png,b.jpg --video c.mp4]\n"
      "              [--json_schema FILE | --regex RE | --choices a,b | --grammar FILE |\n"
      "               --tool_calls auto|required]\n"
      "Runs the model on the prompt and prints the continuation: token ids for --tokens, text\n"
      "for --prompt, {reasoning, content, tool_calls} for --chat (--json: all of it).",
      argc, argv,
      {"model_flag", "json_flag", "threads_flag", "tokens_flag", "engine_flags", "mmproj_flag",
       "packed_dir_flag", "video_flags"});
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
