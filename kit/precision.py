"""Which floating-point precision a run computes in, and why.

bfloat16 is only fast where the hardware computes it: AVX512-BF16 or AMX on x86, the BF16
extension on Arm. Elsewhere torch emulates it, and a recipe pinned to bfloat16 ran several
times slower than float32 (measured on a 2-core AMD EPYC without AVX-512: one format-priming
step 200+ s in bfloat16 vs 33.6 s in float32). So `model.dtype: auto` asks the machine.

`choose_precision` is a pure function of what the machine reports (CPU flags, GPU support),
so the rule is testable on any machine; `resolve_precision` reads this machine and calls it.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass
from typing import Iterable

X86 = ("x86_64", "amd64", "i386", "i686", "x86")
ARM = ("aarch64", "arm64", "armv8l")
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The cost of emulated bf16, as measured (quoted in the warning so that a user can judge it).
EMULATED_BF16_COST = ("about 6x slower than float32 (one priming step: 200+ s in bfloat16 vs 33.6 s in "
                      "float32 on a 2-core AMD EPYC without AVX-512)")


@dataclass(frozen=True)
class Precision:
    """The dtype a run uses, the reason in words, and a warning when the choice is known to be slow."""

    dtype: str
    reason: str
    warning: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def cpu_has_native_bf16(flags: Iterable[str], machine: str) -> bool:
    """bfloat16 arithmetic in hardware: AVX512-BF16 / AMX-BF16 on x86, BF16 on Arm."""
    flags = {f.lower() for f in flags}
    machine = machine.lower()
    if machine in X86:
        return any(f in flags for f in X86_BF16_FLAGS)
    if machine in ARM:
        return "bf16" in flags or "feat_bf16" in flags
    return False


def _native_bf16_names(flags: Iterable[str], machine: str) -> str:
    flags = {f.lower() for f in flags}
    if machine.lower() in X86:
        found = [f for f in X86_BF16_FLAGS if f in flags]
    else:
        found = [f for f in ("bf16", "feat_bf16") if f in flags]
    return "/".join(found).upper() or "BF16"


def choose_precision(requested: str, device: str, cpu_flags: Iterable[str] = (), machine: str = "x86_64",
                     gpu_bf16: bool = False) -> Precision:
    """The dtype for `model.dtype=requested` on this device.

    `auto`: on a GPU bfloat16 when the card supports it, else float16; on a CPU bfloat16 only
    where the CPU computes it natively, else float32. An explicit choice is kept, with a
    warning when it is bfloat16 on a CPU that would emulate it. float16 on a CPU is replaced
    (the trainers refuse fp16 on CPU, and most CPUs emulate it)."""
    flags = frozenset(f.lower() for f in cpu_flags)
    if device == "cuda":
        if requested == "auto":
            if gpu_bf16:
                return Precision("bfloat16", "auto: this GPU supports bfloat16")
            return Precision("float16", "auto: this GPU has no bfloat16 support, so float16")
        return Precision(requested, f"set by the recipe (model.dtype={requested})")
    native = cpu_has_native_bf16(flags, machine)
    if requested == "auto":
        if native:
            return Precision("bfloat16", f"auto: this CPU computes bfloat16 natively "
                                         f"({_native_bf16_names(flags, machine)})")
        return Precision("float32", "auto: this CPU has no native bfloat16 (no AVX512-BF16/AMX on x86, "
                                    "no BF16 on Arm), where bfloat16 would be emulated and slow")
    if requested == "bfloat16" and not native:
        return Precision("bfloat16", "set by the recipe (model.dtype=bfloat16)",
                         warning=f"model.dtype=bfloat16 on a CPU without native bfloat16: it is emulated, "
                                 f"{EMULATED_BF16_COST}; use model.dtype=auto (float32 here)")
    if requested == "float16":
        replacement = "bfloat16" if native else "float32"
        return Precision(replacement, f"model.dtype=float16 is not used on a CPU (emulated, no loss scaling): "
                                      f"{replacement} instead",
                         warning=f"model.dtype=float16 replaced by {replacement} on this CPU")
    return Precision(requested, f"set by the recipe (model.dtype={requested})")


@functools.cache
def read_cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo, macOS sysctl); empty when unknown."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.lower().split())
                    break
    except OSError:
        pass
    if not flags and platform.system() == "Darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout
            if out.strip().endswith("1"):
                flags.add("feat_bf16")
        except (OSError, subprocess.SubprocessError):
            pass
    return frozenset(flags)


def cpu_bf16_override() -> bool | None:
    """Unsloth's own switch (UNSLOTH_CPU_BF16=0/1) wins, so that the kit and its loader agree."""
    value = os.environ.get("UNSLOTH_CPU_BF16", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return None


def machine_bf16() -> tuple[frozenset[str], str]:
    """(flags, machine) of this host, with UNSLOTH_CPU_BF16 applied to the flags."""
    flags, machine = read_cpu_flags(), platform.machine()
    override = cpu_bf16_override()
    if override is False:
        flags = frozenset(f for f in flags if f not in (*X86_BF16_FLAGS, "bf16", "feat_bf16"))
    elif override is True:
        flags = flags | {"bf16" if machine.lower() in ARM else "avx512_bf16"}
    return flags, machine


def resolve_precision(requested: str, on_gpu: bool) -> Precision:
    """`choose_precision` for this machine."""
    if on_gpu:
        import torch

        return choose_precision(requested, "cuda", gpu_bf16=torch.cuda.is_bf16_supported())
    flags, machine = machine_bf16()
    return choose_precision(requested, "cpu", flags, machine)
