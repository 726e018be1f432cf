"""model.dtype=auto: bfloat16 only where the hardware computes it, decided from the CPU's flags."""
from __future__ import annotations

import pytest

from kit.precision import choose_precision, cpu_has_native_bf16, machine_bf16

# Flag sets as /proc/cpuinfo prints them (trimmed to what matters, plus neighbours that must not count).
SAPPHIRE_RAPIDS = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8".split()
COOPER_LAKE = "sse2 avx avx2 avx512f avx512bw avx512_bf16".split()
AMX_ONLY = "sse2 avx2 amx_tile amx_bf16".split()
ICE_LAKE = "sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_fp16".split()  # AVX-512, no bf16
EPYC_ZEN2 = "fpu sse2 avx avx2 fma f16c bmi2 sha_ni".split()  # the 2-core machine of the issue
GRAVITON3 = "fp asimd sve bf16 i8mm".split()
GRAVITON2 = "fp asimd atomics fphp asimdhp".split()


@pytest.mark.parametrize("flags,machine,native", [
    (SAPPHIRE_RAPIDS, "x86_64", True), (COOPER_LAKE, "x86_64", True), (AMX_ONLY, "AMD64", True),
    (ICE_LAKE, "x86_64", False), (EPYC_ZEN2, "x86_64", False), ([], "x86_64", False),
    (GRAVITON3, "aarch64", True), (GRAVITON2, "aarch64", False), (["feat_bf16"], "arm64", True),
    (SAPPHIRE_RAPIDS, "riscv64", False),  # x86 flag names mean nothing on another architecture
])
def test_native_bf16_from_flags(flags, machine, native):
    assert cpu_has_native_bf16(flags, machine) is native


def test_auto_on_a_cpu_follows_native_bf16():
    yes = choose_precision("auto", "cpu", SAPPHIRE_RAPIDS, "x86_64")
    assert yes.dtype == "bfloat16" and "AVX512_BF16/AMX_BF16" in yes.reason and yes.warning is None
    no = choose_precision("auto", "cpu", EPYC_ZEN2, "x86_64")
    assert no.dtype == "float32" and "no native bfloat16" in no.reason and no.warning is None
    assert choose_precision("auto", "cpu", ICE_LAKE, "x86_64").dtype == "float32"
    assert choose_precision("auto", "cpu", GRAVITON3, "aarch64").dtype == "bfloat16"


def test_forced_bf16_without_native_support_warns_with_the_measured_cost():
    p = choose_precision("bfloat16", "cpu", EPYC_ZEN2, "x86_64")
    assert p.dtype == "bfloat16"  # the recipe's choice is kept ...
    assert "emulated" in p.warning and "6x" in p.warning and "33.6 s" in p.warning  # ... and its cost said
    assert "\n" not in p.warning and "model.dtype=auto" in p.warning
    assert choose_precision("bfloat16", "cpu", SAPPHIRE_RAPIDS, "x86_64").warning is None


def test_float16_on_a_cpu_is_replaced_and_said():
    assert choose_precision("float16", "cpu", EPYC_ZEN2, "x86_64").dtype == "float32"
    p = choose_precision("float16", "cpu", SAPPHIRE_RAPIDS, "x86_64")
    assert p.dtype == "bfloat16" and p.warning


def test_gpu_auto_prefers_bf16_where_the_card_has_it():
    assert choose_precision("auto", "cuda", gpu_bf16=True).dtype == "bfloat16"
    t4 = choose_precision("auto", "cuda", gpu_bf16=False)
    assert t4.dtype == "float16" and "float16" in t4.reason
    assert choose_precision("float32", "cuda", gpu_bf16=True).dtype == "float32"


def test_unsloth_cpu_bf16_switch_is_honoured(monkeypatch):
    """UNSLOTH_CPU_BF16=0/1 makes Unsloth treat bf16 as absent/present: the kit agrees with it."""
    monkeypatch.setenv("UNSLOTH_CPU_BF16", "0")
    assert choose_precision("auto", "cpu", *machine_bf16()).dtype == "float32"
    monkeypatch.setenv("UNSLOTH_CPU_BF16", "1")
    assert choose_precision("auto", "cpu", *machine_bf16()).dtype == "bfloat16"
