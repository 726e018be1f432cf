"""Run a Colab notebook's code cells in one Python process, in its smoke setting, on the device
this machine has: how the RecZero notebook goes through the GPU path on a machine with neither
Jupyter nor network (`bash benchmarks/gpu/check.sh notebook`, after both pack parts are installed).

    python benchmarks/gpu/notebook.py [NOTEBOOK] [--pack UNPACKED/tokenizers] [--json FILE]

NOTEBOOK defaults to notebooks/reczero_colab.ipynb. Each code cell runs with `exec` in one shared
namespace, top to bottom, as a kernel runs them; the kit's display calls print where no IPython
shell runs. The smoke setting is the test suite's (KIT_NOTEBOOK_SMOKE=1: the tiny model, the
embedded synthetic catalog, a few steps); its recipe's `device: auto` puts the model on the GPU
when there is one. Prints one JSON document, also written to $OUT/notebook_check.json: per cell
its first line and seconds, the device the kit's model loaded on, peak GPU memory, the files the
notebook left (adapters, plots, merged model) and the test-split metrics. The first failing cell
stops the run, with its traceback in the document.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.gpu.measure import peak_memory, reset_peak, resolve_device_and_output, write_json  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("KIT_GPU_WORK", "/tmp/kit-gpu-check")) / "notebook"
# imported by the RecZero notebook's cells and what they call (module name: pip name)
NEEDED = {"unsloth": "unsloth", "trl": "trl", "peft": "peft", "transformers": "transformers", "polars": "polars",
          "datasets": "datasets", "pydantic": "pydantic", "yaml": "pyyaml", "jinja2": "jinja2",
          "safetensors": "safetensors", "scipy": "scipy", "IPython": "ipython", "matplotlib": "matplotlib",
          "surprise": "scikit-surprise"}
KEPT = (".safetensors", ".png", ".json", ".gguf")


def missing_modules() -> list[str]:
    """The pip names of what the notebook needs and this Python cannot import."""
    return [pip for module, pip in NEEDED.items() if importlib.util.find_spec(module) is None]


def ensure_tiny_model(pack_tokenizers: Path | None) -> str:
    """The kit's tiny-random folder in KIT_CACHE: already there, or built from the pack's SmolLM2
    tokenizer (the kit builds it from the bundled GGUF, which does not travel)."""
    from kit.model_sources import tiny_random_path

    folder = tiny_random_path()
    if (folder / "config.json").is_file():
        return "found in the cache"
    from benchmarks.gpu.random_models import build_random_model, tokenizer_dir_for

    build_random_model("tiny", tokenizer_dir_for("tiny", pack_tokenizers), folder)
    return "built from the pack's tokenizer (random bf16 weights, the kit's tiny shape)"


def code_cells(notebook: Path) -> list[str]:
    """The notebook's code cells, as source text, in order."""
    nb = json.loads(notebook.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def run_cells(cells: list[str], name: str) -> list[dict[str, Any]]:
    """Execute the cells in one namespace; a record per cell run, the last one with the error if any."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    done = []
    for i, src in enumerate(cells, 1):
        first = next((line for line in src.splitlines() if line.strip()), "")
        print(f"notebook: cell {i}/{len(cells)}: {first[:100]}", flush=True)
        t0 = time.time()
        record: dict[str, Any] = {"cell": i, "first_line": first}
        try:
            exec(compile(src, f"<{name} cell {i}>", "exec"), namespace)  # noqa: S102 (the notebook is ours)
        except BaseException as exc:  # SystemExit from kit.notebook.cli included: the notebook would stop there
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc()[-4000:]
        record["seconds"] = round(time.time() - t0, 1)
        done.append(record)
        if "error" in record:
            break
    return done


def left_behind(out: Path) -> dict[str, int]:
    """The files the notebook wrote under its output folder (adapters, plots, metrics), with sizes."""
    if not out.is_dir():
        return {}
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in KEPT and "checkpoint" not in str(p)}


def loaded_models() -> list[dict[str, Any]]:
    """Where the kit's one model per process sits (kit.model's cache of loaded bases)."""
    model = sys.modules.get("kit.model")
    if model is None:
        return []
    return [{"source": s.source, "device": s.device, "fast_inference": s.fast_inference,
             "first_parameter_on": str(next(s.model.parameters()).device)} for s in model._MODELS.values()]


def test_metrics(out: Path) -> dict[str, Any] | None:
    """The model's figures on the test split (kit.evaluate's metrics.json), when a cell evaluated."""
    for path in sorted(out.glob("*/eval/test/metrics.json")):
        metrics = json.loads(path.read_text())
        return {"run": path.parents[2].name, **{k: metrics.get(k) for k in ("n", "mae", "format_failure_rate")}}
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", nargs="?", type=Path, default=REPO / "notebooks" / "reczero_colab.ipynb")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="the notebook's runs are written here")
    ap.add_argument("--pack", type=Path, default=None, help="unpacked pack folder's tokenizers/ (SmolLM2's files)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when torch sees a GPU")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here (default: $OUT/notebook_check.json)")
    args = ap.parse_args(argv)
    resolve_device_and_output(args, "notebook_check.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc: dict[str, Any] = {"check": "a notebook's cells in its smoke setting", "notebook": args.notebook.name,
                           "device": args.device}
    missing = missing_modules()
    if missing:
        doc["missing"] = missing
        doc["error"] = f"not started: this Python lacks {', '.join(missing)} (carry and install both pack parts)"
        return _finish(doc, args.json, 2)

    out = args.work / "runs"
    os.environ.update(KIT_NOTEBOOK_SMOKE="1", KIT_NOTEBOOK_OUT=str(out), MPLBACKEND="Agg")
    os.chdir(REPO)  # where a kernel started from the repository runs
    doc["tiny_model"] = ensure_tiny_model(args.pack)
    if args.device == "cuda":
        import torch

        doc["card"] = torch.cuda.get_device_name(0)
        reset_peak("cuda")
    cells = code_cells(args.notebook)
    t0 = time.time()
    doc["cells"] = run_cells(cells, args.notebook.stem)
    doc["seconds"] = round(time.time() - t0, 1)
    doc["all_cells_ran"] = len(doc["cells"]) == len(cells) and "error" not in doc["cells"][-1]
    doc["models"] = loaded_models()
    doc["unsloth_imported"] = "unsloth" in sys.modules
    doc["memory"] = peak_memory(args.device)
    doc["files"] = left_behind(out)
    doc["test_metrics"] = test_metrics(out)
    return _finish(doc, args.json, 0 if doc["all_cells_ran"] else 1)


def _finish(doc: dict[str, Any], path: Path | None, code: int) -> int:
    write_json(doc, path)
    return code


if __name__ == "__main__":
    sys.exit(main())
