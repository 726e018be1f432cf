"""Import Unsloth before trl/transformers/peft (it patches them), and keep its noise down.

Every module that touches the model stack imports this first.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*register_constant.*")

import contextlib  # noqa: E402
import sys  # noqa: E402

try:
    with contextlib.redirect_stdout(sys.stderr):  # its banner is a log line: keep stdout for results
        import unsloth  # noqa: F401
    UNSLOTH_ERROR: Exception | None = None
except Exception as exc:  # reported by kit.versions.check_versions with the fix
    UNSLOTH_ERROR = exc
