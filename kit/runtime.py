"""Import Unsloth before trl/transformers/peft (it patches them), and keep its noise down.

With the `trl` backend (kit.backend) Unsloth is not imported at all.

Every module that touches the model stack imports this first. Known third-party noise is
silenced here, at its source and by its exact text, so that nothing else (errors included)
is hidden (see KNOWN_NOISE for each message and why it is harmless).
"""
from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

KNOWN_NOISE = (
    # torch/utils/_pytree.py, logged (not warned) once per torchao enum at import
    ("torch.utils._pytree", "register_constant() on Enum subclasses is deprecated"),
    # bitsandbytes on an AVX512-BF16 CPU tries an optional 4-bit kernel from the model hub (package
    # `kernels`, network) at import and warns when it cannot; its built-in CPU kernel is used instead
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class _DropKnownNoise(logging.Filter):
    """Drop one logger's records whose message contains a known harmless text; pass the rest."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


for _logger, _text in KNOWN_NOISE:
    logging.getLogger(_logger).addFilter(_DropKnownNoise(_text))
warnings.filterwarnings("ignore", message=".*register_constant.*")

import contextlib  # noqa: E402
import sys  # noqa: E402

from kit.backend import requested_backend  # noqa: E402

BACKEND = requested_backend()  # fixed for the process: kit.backend.select_backend sets it before this import
UNSLOTH_ERROR: Exception | None = None
if BACKEND == "unsloth":
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its banner is a log line: keep stdout for results
            import unsloth  # noqa: F401
    except Exception as exc:  # reported by kit.versions.check_versions with the fix
        UNSLOTH_ERROR = exc


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_all_cores(processes: int = 1) -> int:
    """Let torch use every core this process may run on, shared evenly among `processes` on this
    machine (more threads than cores only slows each of them); returns the thread count."""
    import torch

    n = max(1, available_cores() // max(1, processes))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
