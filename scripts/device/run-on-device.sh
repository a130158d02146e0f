#!/usr/bin/env bash
# Runs ON the GPU machine (after scripts/device/pack.sh here, carrying .device and packages/core-cuda/dist):
#   phase1  start background jobs (llama.cpp CUDA build + llama-quantize, synthetic 8B models), op tests, SDK checks
#           on stories260K, then the correctness check against the CPU reference: the 2-layer Llama-3-8B-shaped
#           models (F16, Q8_0, Q4_0, Q4_K_M) are written here by the same seeded generator (sha256 checked against
#           .device/ref/sha256.txt) and their CUDA logits compared with the WASM backend's (.device/ref/ref-*.json.gz,
#           scripts/device/make-references.sh)
#   phase2  out-of-memory check, twinfer benchmark, llama.cpp llama-bench / llama-batched-bench on the same files,
#           summary table
#   all     both
#   quick   op tests (correctness only), SDK checks, then the twinfer benchmark and decode profiles of $TYPES
#           (default q4_0) on 32-layer models only — no llama.cpp, no CPU-reference comparison: for iterating
#   measure where the time goes (see measure() below): Nsight Compute per kernel, host/GPU split of decode steps, A/B
#           of backend switches in one process (AB_VAR / AB_VALUES, AB2_VAR / AB2_VALUES)
# The background jobs are detached (setsid) so phase2, issued while the machine is still warm, finds their results
# under $W. Results go to $W/res and are packed into $OUT (at most a few files come back).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="$ROOT/.device"
W="${TWINFER_DEVICE_WORK:-/tmp/tw}"
OUT="${OUT:-$W/out}"
RES="$W/res"
MODELS="$W/models"
TYPES="${TYPES:-f16 q8_0 q4_0 q4_k_m}"
GEN_TYPES="${GEN_TYPES:-f16 q8_0 q4_0}"  # written by the generator; q4_k_m comes from llama-quantize of the f16 file
LAYERS="${LAYERS:-2 32}"                 # 2: the correctness models, 32: the benchmark models
OPT="$W/op_test"                         # the op test, unpacked from .device/bin/op_test.xz (pack.sh)
mkdir -p "$W" "$OUT" "$RES" "$MODELS"
if [[ -f "$DEV/bin/op_test.xz" && ( ! -x "$OPT" || "$DEV/bin/op_test.xz" -nt "$OPT" ) ]]; then
  xz -dc "$DEV/bin/op_test.xz" >"$OPT" && chmod +x "$OPT"
fi
log() { echo "[$(date +%H:%M:%S)] $*"; }

setup_node() {
  if [[ ! -x "$W/node/bin/node" ]]; then
    mkdir -p "$W/node/bin" && xz -dc "$DEV/node20.xz" >"$W/node/bin/node" && chmod +x "$W/node/bin/node"
  fi
  export PATH="$W/node/bin:$PATH"
  mkdir -p "$W/run/node_modules/@twinfer"
  ln -sfn "$ROOT/packages/core-cuda" "$W/run/node_modules/@twinfer/core-cuda"
  cp -f "$DEV"/js/*.mjs "$W/run/"
}

# The addon: the carried build, or (BUILD_ADDON=1, or none carried) a plain cmake build here.
ensure_addon() {
  local dist="$ROOT/packages/core-cuda/dist/twinfer_cuda.node"
  if [[ -f "$DEV/bin/twinfer_cuda.node.xz" && ( ! -f "$dist" || "$DEV/bin/twinfer_cuda.node.xz" -nt "$dist" ) ]]; then  # carried compressed (pack.sh)
    mkdir -p "$(dirname "$dist")" && xz -dc "$DEV/bin/twinfer_cuda.node.xz" >"$dist"
  fi
  if [[ -f "$dist" && "${BUILD_ADDON:-0}" != 1 ]]; then log "addon: carried $(du -h "$dist" | cut -f1)"; return; fi
  log "addon: building with cmake"
  local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake "${gen[@]}" -S "$ROOT/packages/core-cuda" -B "$W/addon-build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNODE_API_HEADERS_DIR="$DEV/napi/node-api-headers" \
    -DNODE_ADDON_API_DIR="$DEV/napi/node-addon-api" -DTWINFER_CUDA_TESTS=ON >"$RES/addon-build.log" 2>&1 &&
    cmake --build "$W/addon-build" -j 8 >>"$RES/addon-build.log" 2>&1 || { tail -30 "$RES/addon-build.log"; return 1; }
  mkdir -p "$(dirname "$dist")" && cp "$W/addon-build/twinfer_cuda.node" "$dist"
  cp "$W/addon-build/twinfer_cuda_op_test" "$W/op_test"
}

bg_build_llama() {
  rm -rf "$W/llama" && tar -xJf "$DEV/llama-src.tar.xz" -C "$W"
  local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  # Same configuration as scripts/build-llama-tools.sh --cuda (tool-only static build), sm_90.
  cmake "${gen[@]}" -S "$W/llama" -B "$W/llama/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_COMMON=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 &&
    cmake --build "$W/llama/build" -j "${LLAMA_JOBS:-12}" --target llama-bench llama-batched-bench llama-quantize &&
    touch "$W/llama.done" || { touch "$W/llama.failed"; return 1; }
  # The Q4_K_M mix, as bench/run.ts makes it for the CPU: llama-quantize of the F16 file.
  wait_for "$W/models.done" 900 || return 1
  for m in llama3-8b-2l llama3-8b; do
    [[ -f "$MODELS/$m-q4_k_m.gguf" ]] && continue
    "$W/llama/build/bin/llama-quantize" --allow-requantize "$MODELS/$m-f16.gguf" "$MODELS/$m-q4_k_m.tmp" Q4_K_M \
      >"$RES/quantize-$m.log" 2>&1 && mv "$MODELS/$m-q4_k_m.tmp" "$MODELS/$m-q4_k_m.gguf"
    [[ $m == llama3-8b-2l ]] && touch "$W/kq2l.done"
  done
  touch "$W/kq.done"
}

bg_models() {
  local pids=()
  for t in $GEN_TYPES; do
    for layers in $LAYERS; do
      local name=llama3-8b; [[ $layers == 2 ]] && name=llama3-8b-2l
      [[ -f "$MODELS/$name-$t.gguf" ]] && continue
      (node "$W/run/make-synthetic-model.mjs" --preset llama3-8b --layers $layers --type "$t" --seed 1 \
        --vocab-from "$DEV/shared/fixtures/vocab/ggml-vocab-llama-bpe.gguf" --out "$MODELS/$name-$t.tmp" &&
        mv "$MODELS/$name-$t.tmp" "$MODELS/$name-$t.gguf") &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p"; done
  touch "$W/models.done"
}

start_models() {  # model generation in the background, once per machine
  if [[ ! -f "$W/models.started" ]]; then
    touch "$W/models.started"
    setsid nohup bash "$0" _models >"$RES/models.log" 2>&1 </dev/null &
  fi
}

start_background() {
  if [[ ! -f "$W/llama.started" ]]; then
    touch "$W/llama.started"
    setsid nohup bash "$0" _llama >"$RES/llama-build.log" 2>&1 </dev/null &
  fi
  start_models
}

op_tests() {  # correctness of every CUDA op; prints only what is not ok
  log "op tests (correctness)"
  timeout 200 "$OPT" --quick 2>&1 | tee "$RES/op_test.txt" | grep -Ev '^ok '
  return 0
}

wait_for() {  # file seconds
  local t=0
  while [[ ! -f "$1" && $t -lt $2 ]]; do sleep 5; t=$((t + 5)); done
  [[ -f "$1" ]]
}

pack_results() {
  tar -czf "$OUT/results-$1.tgz" -C "$W" res 2>/dev/null
  if [[ -f "$RES/summary.md" ]]; then cp "$RES/summary.md" "$OUT/"; fi
  return 0
}

phase1() {
  nvidia-smi | tee "$RES/nvidia-smi.txt"
  start_background
  ensure_addon || return 1
  log "op tests"
  timeout 300 "$OPT" 2>&1 | tee "$RES/op_test.txt"
  if ! grep -q '^PASSED' "$RES/op_test.txt"; then  # a broken kernel makes every later number meaningless
    grep '^FAIL' "$RES/op_test.txt"
    # The newest kernel first: without the tensor-core prompt attention, do the rest pass? Then run on without it
    # (phase2 reads $W/env) and say so.
    if TWINFER_CUDA_SIMT_ATTENTION=1 timeout 200 "$OPT" --quick >"$RES/op_test-simt-attention.txt" 2>&1 &&
      grep -q '^PASSED' "$RES/op_test-simt-attention.txt"; then
      log "op tests pass with TWINFER_CUDA_SIMT_ATTENTION=1: continuing with it"
      echo "export TWINFER_CUDA_SIMT_ATTENTION=1" >"$W/env"
      export TWINFER_CUDA_SIMT_ATTENTION=1
    else
      log "op tests failed: stopping here"
      pack_results phase1
      return 1
    fi
  fi
  log "SDK checks (stories260K)"
  (cd "$W/run" && timeout 180 node gpu-run.mjs check --shared "$DEV/shared") 2>&1 | tee "$RES/check.txt"
  log "waiting for the synthetic 8B models"
  wait_for "$W/models.done" "${MODEL_WAIT:-300}" || { log "models not ready"; tail -5 "$RES/models.log"; pack_results phase1; return 0; }
  ls -la "$MODELS"
  # Against the CPU reference (WASM backend, exact float activations), 2-layer 8B-shaped models.
  for t in $TYPES; do
    local m="$MODELS/llama3-8b-2l-$t.gguf"
    [[ $t == q4_k_m ]] && { wait_for "$W/kq2l.done" 420 || { log "no Q4_K_M model"; tail -20 "$RES/llama-build.log"; continue; }; }
    local want got
    want="$(grep " llama3-8b-2l-$t.gguf" "$DEV/ref/sha256.txt" | cut -d' ' -f1)"
    got="$(sha256sum "$m" | cut -d' ' -f1)"
    log "llama3-8b-2l-$t sha256 here $got, reference machine ${want:-none}" | tee -a "$RES/compare.txt"
    [[ "$want" == "$got" ]] || log "WARNING: llama3-8b-2l-$t differs from the file the reference was computed on" | tee -a "$RES/compare.txt"
    (cd "$W/run" && timeout 120 node gpu-run.mjs logits --model "$m" --out "$W/test-2l-$t.json" &&
      node gpu-run.mjs compare --ref "$DEV/ref/ref-$t.json.gz" --test "$W/test-2l-$t.json" --label "llama3-8b-2l-$t" \
        --ref-name "WASM backend (CPU, exact activations)") 2>&1 | tee -a "$RES/compare.txt"
  done
  grep -E '^(PASS|FAIL)' "$RES/compare.txt"
  PROFILE_BATCH_TYPE=q4_0 profile ${PROFILE1:-q4_0}
  pack_results phase1
}

# Per-op GPU time of single-stream decode on the full 8B shape (events around every op; graphs off).
profile() {
  for t in "$@"; do
    [[ $t == q4_k_m ]] && { wait_for "$W/kq.done" 420 || continue; }
    (cd "$W/run" && TWINFER_CUDA_PROFILE=1 timeout 120 node gpu-run.mjs profile --model "$MODELS/llama3-8b-$t.gguf" \
      --label "$t") 2>&1 | tee "$RES/profile-$t.txt"
  done
  # One batched profile: 64 sequences, as batched64 of the benchmark.
  local bt="${PROFILE_BATCH_TYPE:-}"
  if [[ -n "$bt" ]]; then
    (cd "$W/run" && TWINFER_CUDA_PROFILE=1 timeout 120 node gpu-run.mjs profile --model "$MODELS/llama3-8b-$bt.gguf" \
      --label "$bt-batch64" --batch 64) 2>&1 | tee "$RES/profile-$bt-batch64.txt"
  fi
}

phase2() {
  [[ -f "$W/env" ]] && { cat "$W/env"; source "$W/env"; }
  setup_node
  start_background
  ensure_addon || return 1
  wait_for "$W/models.done" 300 || { log "models not ready"; pack_results phase2; return 1; }
  wait_for "$W/kq.done" 420 || log "Q4_K_M 8B model not ready"
  profile ${PROFILE2:-q4_k_m}
  (cd "$W/run" && timeout 120 node gpu-run.mjs check --shared "$DEV/shared" --big "$MODELS/llama3-8b-f16.gguf") 2>&1 |
    tee "$RES/check-oom.txt"
  for t in $TYPES; do
    log "twinfer bench $t"
    (cd "$W/run" && timeout 200 node gpu-run.mjs bench --model "$MODELS/llama3-8b-$t.gguf" --label "$t") 2>&1 |
      tee "$RES/ours-$t.log"
  done
  # Optional A/B in the same call: AB_ENV="TWINFER_CUDA_X=1" AB_TYPES="q4_0" runs those benchmarks again with it.
  for t in ${AB_TYPES:-}; do
    (cd "$W/run" && env ${AB_ENV:-} timeout 200 node gpu-run.mjs bench --model "$MODELS/llama3-8b-$t.gguf" \
      --label "$t-ab") 2>&1 | tee "$RES/ab-$t.log"
  done
  grep -h 'tok/s' "$RES"/ours-*.log "$RES"/ab-*.log 2>/dev/null
  log "waiting for the llama.cpp build"
  wait_for "$W/llama.done" 300 || { log "llama.cpp build not done"; tail -20 "$RES/llama-build.log"; }
  local bin="$W/llama/build/bin"
  if [[ -x "$bin/llama-bench" ]]; then
    for t in $TYPES; do
      log "llama.cpp bench $t"
      timeout 150 "$bin/llama-bench" -m "$MODELS/llama3-8b-$t.gguf" -p 512 -n 128 -ngl 99 -fa on -r 3 -o json \
        >"$RES/llama-bench-$t.json" 2>"$RES/llama-bench-$t.err"
      timeout 150 "$bin/llama-batched-bench" -m "$MODELS/llama3-8b-$t.gguf" -c 17000 -b 2048 -ub 512 -npp 128 \
        -ntg 128 -npl 8,32,64 -ngl 99 -fa on --output-format jsonl >"$RES/batched-$t.jsonl" 2>"$RES/batched-$t.err"
      tail -3 "$RES/batched-$t.jsonl"
    done
  fi
  node "$W/run/summarize.mjs" "$RES" | tee "$RES/summary.md"
  pack_results phase2
}

quick() {
  nvidia-smi -L | tee "$RES/nvidia-smi.txt"
  start_models
  ensure_addon || return 1
  op_tests
  log "SDK checks (stories260K)"
  (cd "$W/run" && timeout 180 node gpu-run.mjs check --shared "$DEV/shared") 2>&1 | tee "$RES/check.txt"
  wait_for "$W/models.done" "${MODEL_WAIT:-400}" || { log "models not ready"; tail -5 "$RES/models.log"; pack_results quick; return 1; }
  for t in $TYPES; do
    (cd "$W/run" && timeout 200 node gpu-run.mjs bench --model "$MODELS/llama3-8b-$t.gguf" --label "$t") 2>&1 |
      tee "$RES/ours-$t.log" | grep -v '^RESULT'
  done
  PROFILE_BATCH_TYPE="${PROFILE_BATCH_TYPE:-q4_0}" profile ${PROFILE1:-q4_0}
  pack_results quick
}

# Where the time goes, no llama.cpp: op tests (correctness), kernel timings, Nsight Compute on the decode products of
# op_test (NCU_KERNELS, a regex per pass) and on NCU_LAUNCHES kernels of an eager decode step of the 32-layer model
# of each of $TYPES (one kernel at a time at the card's own clocks), and the host/GPU split of replayed decode steps
# (TWINFER_CUDA_STEP_TIMES=1, through gpu-run.mjs decode-ab).
measure() {
  nvidia-smi -L | tee "$RES/nvidia-smi.txt"
  local ncu; ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
  log "ncu: ${ncu:-none}; nsys: $(command -v nsys || echo none)"
  start_models
  ensure_addon || return 1
  op_tests
  [[ "${SKIP_CHECK:-0}" == 1 ]] || (cd "$W/run" && timeout 180 node gpu-run.mjs check --shared "$DEV/shared") 2>&1 |
    tee "$RES/check.txt" | grep -E '^(PASS|FAIL)'
  [[ "${SKIP_TIMES:-0}" == 1 ]] || timeout 150 "$OPT" --times 2>&1 | tee "$RES/op_times.txt" | grep -E '^time matmul .* n=(1|64) '
  if [[ -n "$ncu" ]]; then
    local k=0
    for re in ${NCU_KERNELS:-}; do
      k=$((k + 1))
      timeout 150 "$ncu" --clock-control none -k "regex:$re" --launch-skip 10 --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
        --section LaunchStats --section SchedulerStats --section InstructionStats "$OPT" --times >"$RES/ncu-op-$k.txt" 2>&1
      grep -E '^  [a-zA-Z_].*\(|Duration|Memory Throughput|DRAM Throughput|L1/TEX Hit|L2 Hit|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Stall|Executed Ipc|Theoretical Occ|Mem Busy|Max Bandwidth|L1/TEX Cache Throughput|L2 Cache Throughput' "$RES/ncu-op-$k.txt" | head -40
    done
  fi
  wait_for "$W/models.done" "${MODEL_WAIT:-400}" || { log "models not ready"; tail -5 "$RES/models.log"; pack_results measure; return 1; }
  for t in $TYPES; do
    (cd "$W/run" && TWINFER_CUDA_STEP_TIMES=1 timeout 240 node gpu-run.mjs decode-ab --model "$MODELS/llama3-8b-$t.gguf" \
      --label "$t" --ab "${AB_VAR:-TWINFER_CUDA_STEP_TIMES}" --values "${AB_VALUES:-1}") 2>&1 | tee "$RES/steps-$t.log" |
      grep -v '^RESULT'
    if [[ -n "${AB2_VAR:-}" ]]; then  # a second switch, same model
      (cd "$W/run" && TWINFER_CUDA_STEP_TIMES=1 timeout 240 node gpu-run.mjs decode-ab --model "$MODELS/llama3-8b-$t.gguf" \
        --label "$t" --ab "$AB2_VAR" --values "$AB2_VALUES") 2>&1 | tee "$RES/steps2-$t.log" | grep -v '^RESULT'
    fi
    if [[ -n "$ncu" && "${NCU_LAUNCHES:-0}" -gt 0 ]]; then
      (cd "$W/run" && TWINFER_CUDA_GRAPHS=0 timeout 240 "$ncu" --clock-control none --launch-skip "${NCU_SKIP:-3000}" \
        --launch-count "$NCU_LAUNCHES" --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        --csv --print-units base --log-file "$RES/ncu-step-$t.csv" node gpu-run.mjs profile --model "$MODELS/llama3-8b-$t.gguf" \
        --label "$t") >"$RES/ncu-step-$t.log" 2>&1
      node "$W/run/summarize.mjs" --ncu "$RES/ncu-step-$t.csv" 2>&1 | tee "$RES/ncu-step-$t.txt"
    fi
  done
  pack_results measure
}

case "${1:-all}" in
  _llama) bg_build_llama ;;
  _models) setup_node && bg_models ;;
  phase1) setup_node && phase1 ;;
  phase2) phase2 ;;
  quick) setup_node && quick ;;
  measure) setup_node && measure ;;  # e.g. TYPES=q4_0 GEN_TYPES=q4_0 LAYERS=32 NCU_KERNELS="mmvq_kernel" NCU_LAUNCHES=600  # e.g. TYPES=q4_0 GEN_TYPES=q4_0 LAYERS=32 ...
  all) setup_node && phase1 && phase2 ;;
  pack) pack_results "${2:-partial}" ;;  # after a phase cut short by a time limit
  *) echo "usage: $0 phase1|phase2|all" >&2; exit 2 ;;
esac
