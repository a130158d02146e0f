#!/usr/bin/env bash
# Builds llama.cpp's own command-line tools (reference baselines for tests and benchmarks) from the exact
# llama.cpp source that node-llama-cpp ships as a git bundle, so the tools and the node-llama-cpp oracle are the
# same llama.cpp revision.
#
# Usage: scripts/build-llama-tools.sh [--cuda] [--targets "t1 t2"] [--jobs N] [--force]
#   default (CPU):  llama-quantize llama-bench llama-perplexity llama-debug  ->  .cache/llama.cpp/build-cpu/bin/
#   --cuda:         llama-bench llama-batched-bench (-DGGML_CUDA=ON) ->  .cache/llama.cpp/build-cuda/bin/
# Environment (same meaning as the flags): LLAMA_TOOLS_CUDA=1, LLAMA_TOOLS_TARGETS, LLAMA_TOOLS_JOBS,
#   LLAMA_TOOLS_FORCE=1; also LLAMA_BUNDLE (path of the git bundle), LLAMA_CUDA_ARCHS (default 90),
#   LLAMA_TOOLS_NATIVE (ON/OFF, default ON: the binaries are cached per machine, never shipped),
#   LLAMA_TOOLS_CONFIGURE_ONLY=1 (stop after cmake configure; used to check a CUDA toolchain quickly).
# Idempotent: when every requested binary exists and was built from the bundle's commit it only prints the paths.
# The last line of stdout is always `LLAMA_TOOLS_BIN=<dir>` so callers can parse it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/llama.cpp"

cuda="${LLAMA_TOOLS_CUDA:-0}"
targets="${LLAMA_TOOLS_TARGETS:-}"
jobs="${LLAMA_TOOLS_JOBS:-2}"
force="${LLAMA_TOOLS_FORCE:-0}"
native="${LLAMA_TOOLS_NATIVE:-ON}"
cuda_archs="${LLAMA_CUDA_ARCHS:-90}"
configure_only="${LLAMA_TOOLS_CONFIGURE_ONLY:-0}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cuda) cuda=1 ;;
    --targets) targets="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --force) force=1 ;;
    --configure-only) configure_only=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-llama-tools: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [[ "$cuda" == 1 ]]; then
  build_dir="$CACHE/build-cuda"
  targets="${targets:-llama-bench llama-batched-bench}"
else
  build_dir="$CACHE/build-cpu"
  targets="${targets:-llama-quantize llama-bench llama-perplexity llama-debug}"
fi
bin_dir="$build_dir/bin"

log() { echo "build-llama-tools: $*" >&2; }

# --- locate the bundle: the node-llama-cpp installed for the test or bench workspace package -----------------------
bundle="${LLAMA_BUNDLE:-}"
if [[ -z "$bundle" ]]; then
  # test/ and bench/ link it; the pnpm store path is the fallback when only that was copied (e.g. to a GPU machine).
  for cand in "$ROOT/test/node_modules/node-llama-cpp" "$ROOT/bench/node_modules/node-llama-cpp" \
              "$ROOT"/node_modules/.pnpm/node-llama-cpp@*/node_modules/node-llama-cpp; do
    if [[ -f "$cand/llama/gitRelease.bundle" ]]; then bundle="$cand/llama/gitRelease.bundle"; break; fi
  done
fi
if [[ -z "$bundle" || ! -f "$bundle" ]]; then
  log "node-llama-cpp's llama/gitRelease.bundle not found (run 'pnpm install' at the repo root, or set LLAMA_BUNDLE)"
  exit 1
fi

# --- tools: install what is missing on a bare Debian/Ubuntu machine when we are allowed to ------------------------
missing=()
for tool in git cmake make g++; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    pkgs=()
    for tool in "${missing[@]}"; do
      case "$tool" in g++) pkgs+=(g++) ;; *) pkgs+=("$tool") ;; esac
    done
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    log "missing required tools: ${missing[*]} (install them, e.g. apt-get install -y ${missing[*]})"
    exit 1
  fi
fi

# The bundle holds a single squashed commit under HEAD; its id is the version stamp of the builds.
commit="$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" { print $1; exit }')"
if [[ -z "$commit" ]]; then log "cannot read HEAD from $bundle"; exit 1; fi

# --- fast path: everything already built from this commit ---------------------------------------------------------
all_built=1
for t in $targets; do [[ -x "$bin_dir/$t" ]] || all_built=0; done
if [[ "$force" != 1 && "$configure_only" != 1 && "$all_built" == 1 && -f "$build_dir/.commit" \
      && "$(cat "$build_dir/.commit")" == "$commit" ]]; then
  for t in $targets; do log "up to date: $bin_dir/$t"; done
  echo "LLAMA_TOOLS_BIN=$bin_dir"
  exit 0
fi

# --- sources: clone the bundle once; re-clone when node-llama-cpp (hence the bundle) changed ---------------------
src="$CACHE/src"
mkdir -p "$CACHE"
if [[ ! -d "$src/.git" || "$(git -C "$src" rev-parse HEAD 2>/dev/null)" != "$commit" ]]; then
  log "cloning llama.cpp $commit from $bundle"
  rm -rf "$src"
  git -c advice.detachedHead=false clone --quiet "$bundle" "$src"
  git -C "$src" -c advice.detachedHead=false checkout --quiet "$commit"
  rm -rf "$CACHE/build-cpu" "$CACHE/build-cuda"
fi

# --- configure -----------------------------------------------------------------------------------------------------
# Static, tool-only build: no server/web UI (its configure step may try to download a prebuilt UI), no HTTPS,
# no tests. Examples are configured (llama-debug, which dumps raw logits, is one) but only named targets are built.
# LLAMA_CURL no longer exists in this llama.cpp (deprecated, only warns), so it is not passed.
cmake_args=(
  -S "$src" -B "$build_dir"
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE="$native"
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=ON
  -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_APP=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_COMMON=ON
)
if [[ "$cuda" == 1 ]]; then
  if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/bin; do [[ -x "$d/nvcc" ]] && export PATH="$d:$PATH"; done
  fi
  command -v nvcc >/dev/null 2>&1 || { log "--cuda needs nvcc on PATH"; exit 1; }
  cmake_args+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cuda_archs" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)")
fi
generator=()
command -v ninja >/dev/null 2>&1 && [[ ! -f "$build_dir/Makefile" ]] && generator=(-G Ninja)

start=$(date +%s)
log "configuring in $build_dir (cuda=$cuda, native=$native)"
cmake "${generator[@]}" "${cmake_args[@]}" >"$CACHE/configure-$(basename "$build_dir").log" 2>&1 || {
  tail -n 40 "$CACHE/configure-$(basename "$build_dir").log" >&2
  log "cmake configure failed (full log: $CACHE/configure-$(basename "$build_dir").log)"
  if [[ "$cuda" == 1 ]] && grep -q "CUDA::cublas" "$CACHE/configure-$(basename "$build_dir").log"; then
    log "the CUDA toolkit here has no cuBLAS (a compiler-only install): build the CUDA tools on the GPU machine"
  fi
  exit 1
}
if [[ "$configure_only" == 1 ]]; then
  log "configure OK in $(( $(date +%s) - start ))s (configure only, nothing built)"
  echo "LLAMA_TOOLS_BIN=$bin_dir"
  exit 0
fi

# --- build only the requested targets -----------------------------------------------------------------------------
log "building $targets with -j$jobs"
# shellcheck disable=SC2086
cmake --build "$build_dir" --config Release -j "$jobs" --target $targets
echo "$commit" >"$build_dir/.commit"
log "built in $(( $(date +%s) - start ))s"
for t in $targets; do
  [[ -x "$bin_dir/$t" ]] || { log "expected binary missing after build: $bin_dir/$t"; exit 1; }
  log "built: $bin_dir/$t"
done
echo "LLAMA_TOOLS_BIN=$bin_dir"
