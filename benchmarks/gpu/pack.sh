#!/usr/bin/env bash
# Run here (PyPI reachable): fill the git-ignored .gpu-pack/ with what a GPU machine without
# network needs for benchmarks/gpu/check.sh, print its size, and fail when tracked files + the
# pack would pass 60 MiB (a run carries at most 64 MiB). See docs/gpu.md.
#   bash benchmarks/gpu/pack.sh [--limit-mib 60] [--size-only]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" benchmarks/gpu/pack.py "$@"
