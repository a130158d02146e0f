#!/usr/bin/env bash
# Reference logits for the GPU correctness check, computed HERE (CPU) so the GPU machine only compares.
#
# Models: the Llama-3-8B layer shape (dim 4096, 32/8 heads, FFN 14336, vocab 128256) with 2 layers, seed 1, from
# scripts/make-synthetic-model.ts (F16, Q8_0, Q4_0) and llama.cpp's llama-quantize (Q4_K_M from the F16 file). The
# generator is deterministic, so the GPU machine writes the same files; their sha256 go along and are checked there.
# Reference: the WASM backend with exact float activations (tw_engine on the CPU), F32 KV cache: teacher-forced logits
# at 4 positions of a fixed 64-token prompt, 16 greedy tokens and their top-2 margins (bench/gpu/device-run.ts logits).
# Output: .device/ref/{ref-<type>.json, sha256.txt} (carried with .device).
#
# Usage: scripts/device/make-references.sh [types...]   (default: f16 q8_0 q4_0 q4_k_m)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="${TWINFER_SHARED:-$ROOT/../shared}"
MODELS="$ROOT/.cache/gpu-ref"
REF="$ROOT/.device/ref"
TSX="$ROOT/test/node_modules/.bin/tsx"
TYPES="${*:-f16 q8_0 q4_0 q4_k_m}"
mkdir -p "$MODELS" "$REF"
log() { echo "[$(date +%H:%M:%S)] make-references: $*" >&2; }

model() {  # type -> path, generated if missing
  local t="$1" f="$MODELS/llama3-8b-2l-$1.gguf"
  if [[ ! -f "$f" ]]; then
    if [[ "$t" == q4_k_m ]]; then
      local q; q="$(bash "$ROOT/scripts/build-llama-tools.sh" --targets llama-quantize | sed -n 's/^LLAMA_TOOLS_BIN=//p')/llama-quantize"
      "$q" --allow-requantize "$(model f16)" "$f.tmp" Q4_K_M >/dev/null 2>"$MODELS/quantize.log"
    else
      "$TSX" "$ROOT/scripts/make-synthetic-model.ts" --preset llama3-8b --layers 2 --type "$t" --seed 1 \
        --vocab-from "$SHARED/fixtures/vocab/ggml-vocab-llama-bpe.gguf" --out "$f.tmp" >&2
    fi
    mv "$f.tmp" "$f"
  fi
  echo "$f"
}

for t in $TYPES; do
  f="$(model "$t")"
  log "$t: $(du -h "$f" | cut -f1)"
  if [[ ! -f "$REF/ref-$t.json.gz" ]]; then
    "$TSX" "$ROOT/bench/gpu/device-run.ts" logits --backend wasm --threads 2 --model "$f" --out "$REF/ref-$t.tmp.json.gz"
    mv "$REF/ref-$t.tmp.json.gz" "$REF/ref-$t.json.gz"
  fi
done
(cd "$MODELS" && sha256sum llama3-8b-2l-*.gguf) >"$REF/sha256.txt"
cat "$REF/sha256.txt"
