#!/usr/bin/env bash
# The README's explorer screenshots (docs/explorer/*.png), taken by the browser tests themselves
# with a real LLM: the quick preset's titles LLM fine-tuned on the men panel (about 3 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
LLM=${1:-runs/explorer/llm-titles}
[ -f "$LLM/model.json" ] || .venv/bin/laborllm fit llm --data nlsy79-males --out "$LLM"
mkdir -p docs/explorer
LABORLLM_EXPLORER_LLM="$LLM" LABORLLM_SCREENSHOTS=docs/explorer .venv/bin/python -m pytest -q tests/test_serve.py -k browser
