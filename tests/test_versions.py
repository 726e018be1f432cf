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
