"""Which training stack this process runs, chosen once before any of it is imported.

Unsloth patches trl/transformers/peft when it is imported, for the whole process, so a process
runs one backend: `unsloth` (the default; one GPU or a CPU) or `trl` (plain transformers + peft,
several processes under `accelerate launch`). kit.runtime reads the choice from KIT_BACKEND when
it is first imported; `select_backend` sets it from a config and refuses a switch it cannot make.
"""
from __future__ import annotations

import os
import sys

from kit.config import ConfigError

BACKENDS = ("unsloth", "trl")
ENV = "KIT_BACKEND"


def _known(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"{where}{name!r} is not a backend: use one of {', '.join(BACKENDS)}")
    return name


def requested_backend() -> str:
    """The backend KIT_BACKEND names (unsloth when unset); a clear stop on a typo."""
    return _known(os.environ.get(ENV, "unsloth") or "unsloth", f"{ENV}=")


def select_backend(name: str) -> str:
    """Make `name` this process's backend and import its stack (kit.runtime). A process that has
    already imported the other one cannot switch: Unsloth's patches stay for its lifetime."""
    _known(name, "backend: ")
    runtime = sys.modules.get("kit.runtime")
    if runtime is None:
        os.environ[ENV] = name
        import kit.runtime  # noqa: F401  (unsloth first when the backend is unsloth)

        return name
    if runtime.BACKEND != name:
        raise ConfigError(f"backend={name}, but this process already runs backend={runtime.BACKEND} (its libraries "
                          f"are imported and, for unsloth, patched): start a new process (or restart the "
                          f"notebook's runtime), or set {ENV}={name} before importing kit")
    return name


def current_backend() -> str:
    """The backend of this process: the one kit.runtime imported, else the one it would import."""
    runtime = sys.modules.get("kit.runtime")
    return runtime.BACKEND if runtime is not None else requested_backend()
