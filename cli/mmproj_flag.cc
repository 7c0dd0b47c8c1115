// --mmproj: the vision tower's file, for generate, serve and worker (which read it) and synth
// (which writes one). A file of its own for the reason in model_flag.cc.
#include "absl/flags/flag.h"
#include "cli/engine_flags.h"

ABSL_FLAG(std::string, mmproj, "",
          "The vision tower's GGUF (an mmproj file made for the model): enables image input. "
          "Not needed for a model file that bundles its tower (Ollama's) or an ollama: model "
          "with a projector layer. Without any, requests with images are refused. (synth: "
          "where to write a random vision tower.)");
