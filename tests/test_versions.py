"""The installed set is the tested one, and a drift is named with its fix."""
from __future__ import annotations

from kit import versions


def test_installed_set_is_the_tested_set():
    assert versions.version_problems() == []


def test_drift_is_named_with_the_fix(monkeypatch):
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda n: "1.16.0" if n == "trl" else real(n))
    problems = versions.version_problems()
    assert problems == ["trl 1.16.0 is installed, tested with 1.15.0"]
    lines = []
    assert versions.check_versions(warn=lines.append) is False
    assert "trl 1.16.0" in lines[0] and "scripts/setup.sh" in lines[0]


def test_gpu_pins_are_checked_where_vllm_is_installed(monkeypatch):
    real = versions.installed
    fake = {"vllm": "0.31.0", "vllm-bnb-plugin": None, "bitsandbytes": "0.47.0"}
    monkeypatch.setattr(versions, "installed", lambda n: fake[n] if n in fake else real(n))
    problems = versions.version_problems()  # vLLM present: the GPU-only pins count
    assert "vllm-bnb-plugin is not installed (tested: 0.0.3)" in problems
    assert any(p.startswith("bitsandbytes 0.47.0 is older than 0.48.1") for p in problems)
    assert not any(p.startswith("vllm ") for p in problems)
    fake["vllm"] = None
    assert not any("vllm" in p for p in versions.version_problems())  # a CPU machine: no GPU-only pins
