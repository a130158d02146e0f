#!/usr/bin/env bash
# One command for the test suite: set everything up, build llama.cpp's reference tools from the source bundle
# inside node-llama-cpp (cached in .cache/), then run every package's tests and the end-to-end suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/build-llama-tools.sh --targets llama-quantize >/dev/null
pnpm -s test --output-logs=full --concurrency=1
