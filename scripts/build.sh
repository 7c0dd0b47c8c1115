#!/usr/bin/env bash
# Configures and builds everything into build/ (executables in build/bin/). Release by default;
# extra arguments go to cmake's configure step (e.g. -DQWEN_SANITIZE=address -B build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build
for arg in "$@"; do
  case "$arg" in -B*) build_dir="${arg#-B}" ;; esac
done
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
