#!/usr/bin/env bash
# Run on a GPU machine without network, from the repo root, with .gpu-pack/ carried
# (benchmarks/gpu/pack.sh fills it). Installs the carried wheels into a folder of their own
# (nothing already installed is touched), then runs:
#   bash benchmarks/gpu/check.sh [ARGS]        # the kit's GPU path: benchmarks/gpu/check.py ARGS
#   bash benchmarks/gpu/check.sh bench [ARGS]  # Unsloth vs plain TRL: benchmarks/bench_grpo.py ARGS
#   bash benchmarks/gpu/check.sh install       # only unpack and install
# Results: printed as JSON, and written to $OUT/ when OUT is set. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACK=${PACK:-.gpu-pack}
PY=${PYTHON:-python3}
WORK=${KIT_GPU_WORK:-/tmp/kit-gpu-check}
UNPACKED="$WORK/pack"
SITE="$WORK/site"

MODE=check
case "${1:-}" in check|bench|install) MODE=$1; shift ;; esac

[ -f "$PACK/pack.tar.xz" ] || { echo "check: $PACK/pack.tar.xz is missing: run benchmarks/gpu/pack.sh here first and carry $PACK" >&2; exit 2; }
# One stamp per archive: a second archive (a pack split over two runs on a machine that stays up)
# adds its wheels to the same folder instead of replacing the first one's.
STAMP="$SITE/.installed-$(sha256sum "$PACK/pack.tar.xz" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  t0=$(date +%s)
  mkdir -p "$UNPACKED" "$SITE"
  "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$PACK/pack.tar.xz" "$UNPACKED"
  "$PY" -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE" "$UNPACKED"/wheels/*.whl
  touch "$STAMP"
  echo "check: installed $(ls "$UNPACKED"/wheels | wc -l) carried wheels into $SITE in $(( $(date +%s) - t0 )) s"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export KIT_GPU_WORK="$WORK" KIT_CACHE="$WORK/cache"

# What runs, in one line each: a missing or mismatched package shows here, before any model loads.
"$PY" - <<'EOF'
import importlib, importlib.metadata as md, torch
print(f"check: python {__import__('sys').version.split()[0]}, torch {torch.__version__}, "
      f"cuda {torch.version.cuda}, gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
for dist in ("transformers", "accelerate", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets",
             "polars", "pydantic", "triton"):
    try:
        print(f"check:   {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"check:   {dist} MISSING")
EOF

case "$MODE" in
  install) exit 0 ;;
  check) exec "$PY" benchmarks/gpu/check.py --pack "$UNPACKED/tokenizers" "$@" ;;
  bench) exec "$PY" benchmarks/bench_grpo.py --pack "$UNPACKED/tokenizers" "$@" ;;
esac
