#!/usr/bin/env bash
# Compiles kernels/ (CPU backend, forward pass, C ABI) to WebAssembly SIMD128 with pthreads.
# Needs Debian's emscripten package (the project's set-up script installs it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernels="$(cd "$here/../../kernels" && pwd)"
out="$here/dist/wasm"
mkdir -p "$out"
if ! command -v emcc >/dev/null 2>&1; then
  echo "core-wasm: emcc not found; install Debian's emscripten package (scripts/setup.sh does it)" >&2
  exit 1
fi
export NODE_PATH="${NODE_PATH:-/usr/share/nodejs}"   # Debian's emcc needs acorn from here
export EM_CACHE="${EM_CACHE:-$here/build/em-cache}"   # keep emscripten's system-library cache out of /usr
mkdir -p "$EM_CACHE"
[ -d "$EM_CACHE/sysroot" ] || cp -r /usr/share/emscripten/cache/. "$EM_CACHE"/ 2>/dev/null || true

sources=(
  "$kernels/model/engine.cpp"
  "$kernels/model/forward.cpp"
  "$kernels/cpu/cpu_backend.cpp"
  "$kernels/cpu/thread_pool.cpp"
  "$kernels/cpu/test_exports.cpp"
)
# Pool workers are created when the module starts (a pthread cannot be spawned synchronously from Node's main
# thread later); the loader reads how many from the module options (twinferPoolSize).
extra=()
[ "${TWINFER_WASM_PROFILE:-0}" = 1 ] && extra+=(-DTW_PROFILE)   # per-op times on stderr (cpu_backend.cpp)
emcc -std=c++17 -O3 -msimd128 -pthread -fno-exceptions -DNDEBUG "${extra[@]}" \
  "${sources[@]}" \
  -o "$out/twinfer-wasm.mjs" \
  -sMODULARIZE=1 -sEXPORT_ES6=1 -sEXPORT_NAME=createTwinferWasm \
  -sENVIRONMENT=node,worker \
  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=64MB -sMAXIMUM_MEMORY=4GB \
  -sPTHREAD_POOL_SIZE='Module["twinferPoolSize"]' \
  -sTOTAL_STACK=1MB -sDEFAULT_PTHREAD_STACK_SIZE=1MB \
  -sEXPORTED_FUNCTIONS=_malloc,_free \
  -sEXPORTED_RUNTIME_METHODS=UTF8ToString \
  -sEXIT_RUNTIME=0 -sASSERTIONS=0 -sNODEJS_CATCH_EXIT=0 -sNODEJS_CATCH_REJECTION=0 \
  --extern-pre-js "$here/scripts/node-shim.js"
# The pthread worker file is CommonJS; the package is "type": "module".
echo '{ "type": "commonjs" }' > "$out/package.json"
ls -la "$out"
