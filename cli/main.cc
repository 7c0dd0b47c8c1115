// `qwen`: one program for every tool of qwen-serve, chosen by its first argument.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"inspect", qwen::cli::RunInspect, "print a GGUF file's metadata and tensors"},
    {"generate", qwen::cli::RunGenerate, "run the model on a prompt and print the continuation"},
    {"synth", qwen::cli::RunSynth, "write a full-size GGUF with random weights for benchmarks"},
    {"bench", qwen::cli::RunBench, "measure speed and memory on a model file"},
    {"tokenize", qwen::cli::RunTokenize, "text to token ids with the model's tokenizer"},
    {"detokenize", qwen::cli::RunDetokenize, "token ids to text"},
    {"render", qwen::cli::RunRender, "a chat request to the prompt, with the model's template"},
    {"parse", qwen::cli::RunParse, "generated text to reasoning, content and tool calls"},
    {"serve", qwen::cli::RunServe, "serve the model over gRPC with a pool of worker processes"},
    {"worker", qwen::cli::RunWorker, "one worker process of `qwen serve` (started by it)"},
    {"client", qwen::cli::RunClient, "stream a generation or a chat from a qwen serve"},
    {"load", qwen::cli::RunLoad, "bounded load on a local qwen serve: errors, latency, memory"},
    {"health", qwen::cli::RunHealth, "ask a server's grpc.health.v1 service (for probes)"},
    {"bench-http", qwen::cli::RunBenchHttp,
     "the HTTP API's cost against gRPC on a running qwen serve"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: qwen <command> [flags] [args]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`qwen <command> --help` lists a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) {
      // The subcommand sees "qwen <command>" as its argv[0].
      std::string prog = std::string("qwen ") + c.name;
      std::vector<char*> args;
      args.push_back(prog.data());
      for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
      return c.run(static_cast<int>(args.size()), args.data());
    }
  }
  std::fprintf(stderr, "qwen: unknown command \"%s\"\n\n", name.c_str());
  PrintUsage(stderr);
  return 2;
}
