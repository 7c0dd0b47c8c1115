// Subcommands of the `qwen` program. Each takes the arguments after the subcommand name
// (argv[0] is "qwen <command>") and returns the process exit code.
#ifndef QWEN_CLI_COMMANDS_H_
#define QWEN_CLI_COMMANDS_H_

namespace qwen::cli {

int RunInspect(int argc, char** argv);
int RunGenerate(int argc, char** argv);
int RunSynth(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunTokenize(int argc, char** argv);
int RunDetokenize(int argc, char** argv);
int RunRender(int argc, char** argv);
int RunParse(int argc, char** argv);
int RunServe(int argc, char** argv);
int RunWorker(int argc, char** argv);
int RunClient(int argc, char** argv);
int RunLoad(int argc, char** argv);
int RunHealth(int argc, char** argv);
int RunBenchHttp(int argc, char** argv);

}  // namespace qwen::cli

#endif  // QWEN_CLI_COMMANDS_H_
