"""The processes of one run: one under `python -m kit.train`, several under `accelerate launch`.

Only the main process writes the run folder and talks to the console; the others train their
share and wait at the points where the main one works alone (saving, evaluating). The numbers
come from the launcher's environment (WORLD_SIZE, RANK, LOCAL_RANK), so asking costs nothing.
"""
from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes of this run on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def is_main() -> bool:
    return rank() == 0


def wait_for_everyone() -> None:
    """A barrier across the run's processes (nothing with one process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def gather(value: Any) -> list[Any]:
    """`value` from every process, in rank order, on every process ([value] with one process)."""
    if world_size() == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def weights_sharded() -> bool:
    """DeepSpeed ZeRO-3 or FSDP splits the weights over the processes: a loader must not pin them to
    a device, and a forward pass needs every process (so no process may generate alone)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return True
    return (os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
            and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3")
