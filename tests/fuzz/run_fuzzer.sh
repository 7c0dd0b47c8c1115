#!/usr/bin/env bash
# Runs one libFuzzer target for a fixed time on its committed corpus:
#   run_fuzzer.sh BINARY SECONDS WORK_DIR [extra libFuzzer flags...]
# New inputs go to WORK_DIR/<target>/corpus (the committed tests/fuzz/corpus/<target> is only
# read); crashes, leaks, timeouts and out-of-memory inputs go to WORK_DIR/<target>/artifacts/.
# The log is WORK_DIR/<target>/log. Exits non-zero on any finding. Run from the repository root.
set -uo pipefail
bin=$1 seconds=$2 work_dir=$3
shift 3
target=$(basename "$bin")
seeds=tests/fuzz/corpus/$target
dict=tests/fuzz/dict/$target.dict
[ -f "$dict" ] || dict=tests/fuzz/dict/${target%%_*}.dict
out=$work_dir/$target
mkdir -p "$out/corpus" "$out/artifacts"
args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1
      -artifact_prefix="$out/artifacts/")
[ -f "$dict" ] && args+=(-dict="$dict")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# (stderr of the group goes nowhere: bash's own "Aborted" line; the target's output is in the log)
{ "$bin" "${args[@]}" "$@" "$out/corpus" "$seeds" >"$out/log" 2>&1; } 2>/dev/null
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
cov=$(grep -o 'cov: [0-9]*' "$out/log" | tail -1)
if [ $rc -ne 0 ]; then
  echo "FINDING $target (exit $rc) after ${execs:-?} executions; log: $out/log"
  grep -E 'ERROR: |FUZZ FINDING|runtime error|SUMMARY|Test unit written' "$out/log" | head -20
  exit 1
fi
echo "ok $target: ${seconds}s, ${execs:-?} executions, ${cov:-cov: ?}, corpus $(ls "$out/corpus" | wc -l) new + $(ls "$seeds" 2>/dev/null | wc -l) committed"
