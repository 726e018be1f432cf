#!/usr/bin/env bash
# Run on a GPU machine without network, from the repo root, with .gpu-pack/ carried
# (benchmarks/gpu/pack.sh fills it). Installs the carried wheels into a folder of their own
# (nothing already installed is touched), then runs:
#   bash benchmarks/gpu/check.sh [ARGS]        # the kit's GPU path: benchmarks/gpu/check.py ARGS
#   bash benchmarks/gpu/check.sh bench [ARGS]  # Unsloth vs plain TRL: benchmarks/bench_grpo.py ARGS
#   bash benchmarks/gpu/check.sh install       # only unpack and install
#   bash benchmarks/gpu/check.sh notebook      # the RecZero notebook's cells: benchmarks/gpu/notebook.py ARGS
# Every part that is here is installed: .gpu-pack (the training stack) and .gpu-pack-notebook
# (what the notebook adds); the notebook part travels in a second run on the same machine.
# Results: printed as JSON, and written to $OUT/ when OUT is set. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKS=${PACK:-.gpu-pack .gpu-pack-notebook}
PY=${PYTHON:-python3}
WORK=${KIT_GPU_WORK:-/tmp/kit-gpu-check}
SITE="$WORK/site"

MODE=check
case "${1:-}" in check|bench|notebook|install) MODE=$1; shift ;; esac

# One stamp per archive: each part (or a part carried in a later run on a machine that stays up)
# adds its wheels to the same folder instead of replacing the others'.
FOUND=0
for P in $PACKS; do
  [ -f "$P/pack.tar.xz" ] || continue
  FOUND=1
  UNPACKED="$WORK/unpacked/$(basename "$P")"
  STAMP="$SITE/.installed-$(sha256sum "$P/pack.tar.xz" | cut -c1-16)"
  if [ ! -f "$STAMP" ]; then
    t0=$(date +%s)
    rm -rf "$UNPACKED"
    mkdir -p "$UNPACKED" "$SITE"
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$P/pack.tar.xz" "$UNPACKED"
    "$PY" -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$SITE" "$UNPACKED"/wheels/*.whl
    touch "$STAMP"
    echo "check: installed $(ls "$UNPACKED"/wheels | wc -l) wheels of $P into $SITE in $(( $(date +%s) - t0 )) s"
  fi
done
[ "$FOUND" = 1 ] || { echo "check: no pack.tar.xz in $PACKS: run benchmarks/gpu/pack.sh here first and carry .gpu-pack" >&2; exit 2; }
TOKENIZERS=$(ls -d "$WORK"/unpacked/*/tokenizers 2>/dev/null | head -n 1 || true)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export KIT_GPU_WORK="$WORK" KIT_CACHE="$WORK/cache"

# What runs, in one line each: a missing or mismatched package shows here, before any model loads.
"$PY" - <<'EOF'
import importlib, importlib.metadata as md, torch
print(f"check: python {__import__('sys').version.split()[0]}, torch {torch.__version__}, "
      f"cuda {torch.version.cuda}, gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
for dist in ("transformers", "accelerate", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets",
             "polars", "pydantic", "triton", "scipy", "matplotlib", "ipython", "scikit-surprise"):
    try:
        print(f"check:   {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"check:   {dist} MISSING")
EOF

case "$MODE" in
  install) exit 0 ;;
  check) exec "$PY" benchmarks/gpu/check.py ${TOKENIZERS:+--pack "$TOKENIZERS"} "$@" ;;
  bench) exec "$PY" benchmarks/bench_grpo.py ${TOKENIZERS:+--pack "$TOKENIZERS"} "$@" ;;
  notebook) exec "$PY" benchmarks/gpu/notebook.py ${TOKENIZERS:+--pack "$TOKENIZERS"} "$@" ;;
esac
