#!/usr/bin/env bash
# Sets up a fresh clone: system packages (emscripten for the WASM kernels), pnpm, node modules, and builds every
# package. Idempotent and quick when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "setup: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

need_apt=()
command -v emcc >/dev/null 2>&1 || need_apt+=(emscripten)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v pnpm >/dev/null 2>&1; then
  log "installing pnpm 10 (npm)"
  as_root npm install -g pnpm@10 >/dev/null 2>&1
fi

log "installing node modules"
pnpm install --frozen-lockfile --reporter=silent
log "building packages"
pnpm -s build --output-logs=errors-only
log "ready"
