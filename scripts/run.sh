#!/usr/bin/env bash
# One command for a newcomer: set everything up, then run the twinfer CLI with the given arguments.
#   bash scripts/run.sh generate --model ../shared/fixtures/models/stories260K.gguf --prompt "Once upon a time"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
exec node "$ROOT/packages/cli/dist/cli.js" "$@"
