"""The tested dependency set, and a check that names what differs and how to fix it."""
from __future__ import annotations

import sys
from importlib import metadata

from packaging.version import Version

TESTED = {
    "unsloth": "2026.10.9",
    "unsloth_zoo": "2026.10.9",
    "trl": "1.15.0",
    "transformers": "5.17.0",
    "peft": "0.21.2",
    "accelerate": "1.15.0",
    "datasets": "4.8.5",
    "bitsandbytes": "0.50.2",
    "gradio": "6.31.0",
}
GPU_ONLY = {"vllm": "0.31.0", "vllm-bnb-plugin": "0.0.3"}  # see the `gpu` extra in pyproject.toml
AT_LEAST_GPU = {"bitsandbytes": ("0.48.1", "vllm-bnb-plugin needs it for 4-bit with vLLM")}


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def version_problems(include_gpu: bool | None = None) -> list[str]:
    """What differs from the tested set; the GPU-only packages count when `include_gpu`
    (default: when vLLM is installed, i.e. on a machine set up for the GPU path)."""
    if include_gpu is None:
        include_gpu = installed("vllm") is not None
    wanted = dict(TESTED, **(GPU_ONLY if include_gpu else {}))
    problems = []
    for name, want in wanted.items():
        have = installed(name)
        if have is None:
            problems.append(f"{name} is not installed (tested: {want})")
        elif have.split("+")[0] != want:
            problems.append(f"{name} {have} is installed, tested with {want}")
    for name, (least, why) in (AT_LEAST_GPU.items() if include_gpu else ()):
        have = installed(name)
        if have is not None and Version(have).release < Version(least).release:
            problems.append(f"{name} {have} is older than {least} ({why})")
    runtime = sys.modules.get("kit.runtime")
    if runtime is not None and runtime.UNSLOTH_ERROR is not None:
        problems.append(f"import unsloth failed ({type(runtime.UNSLOTH_ERROR).__name__}: {runtime.UNSLOTH_ERROR})")
    if installed("torchvision") and (installed("torch") or "").endswith("+cpu"):
        problems.append("torchvision is installed beside a CPU torch: it breaks `import unsloth` "
                        "(pip uninstall -y torchvision)")
    return problems


def check_versions(include_gpu: bool | None = None, warn=print) -> bool:
    """Warn (once, one line each) when the installed set is not the tested one."""
    problems = version_problems(include_gpu)
    for p in problems:
        warn(f"kit: {p}. Fix: bash scripts/setup.sh (CPU) or pip install -e '.[gpu]' (GPU)")
    return not problems
