"""The four Colab notebooks, executed top to bottom on CPU in their smoke setting (a real Jupyter
kernel, the tiny test model, the embedded data), in the order a user runs them; and kept stripped."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os

import pytest
import yaml

from benchmarks.gpu.notebook import code_cells
from tests.conftest import REPO

NOTEBOOKS = ["reczero_colab.ipynb", "recone_colab.ipynb", "your_data_colab.ipynb", "app_colab.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_stored_without_outputs(name):
    nb = json.loads((REPO / "notebooks" / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), \
        f"{name} holds outputs: clear them (Edit > Clear all outputs) before committing"
    assert "widgets" not in nb["metadata"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_kit_name_a_notebook_imports_exists(name):
    imported = []
    for src in code_cells(REPO / "notebooks" / name):
        tree = ast.parse(src)
        imported += [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and (node.module or "").startswith("kit") for alias in node.names]
    assert imported
    for module, attr in imported:  # `from kit import notebook` names a module, the rest functions
        found = hasattr(importlib.import_module(module), attr) or importlib.util.find_spec(f"{module}.{attr}")
        assert found, f"{name}: {module}.{attr}"


def _execute(name: str, env: dict):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c["cell_type"] == "code"
                     for o in c.get("outputs", []))


def test_the_four_notebooks_run_end_to_end_in_their_smoke_setting(tmp_path, tiny_model_dir):
    out = tmp_path / "runs"
    env = {"KIT_NOTEBOOK_SMOKE": "1", "KIT_NOTEBOOK_OUT": str(out), "KIT_CACHE": str(tiny_model_dir.parent),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg"}
    shown = {name: _execute(name, env) for name in NOTEBOOKS}

    reczero = out / "reczero-music"
    assert (reczero / "adapter" / "adapter_model.safetensors").is_file()
    assert (reczero / "rewards.png").is_file()  # drawn by the live plot during training
    assert "| model | valid answers" in shown["reczero_colab.ipynb"]  # the before / after table
    assert (reczero / "eval" / "test" / "confusion.png").is_file()
    assert (out / "reczero-music-merged" / "model.safetensors").is_file()
    assert "=== base" in shown["reczero_colab.ipynb"] and "=== tuned" in shown["reczero_colab.ipynb"]

    recone = out / "recone-music"
    assert (out / "traces-music.summary.json").is_file()  # kit.traces ran (its tiny teacher keeps nothing)
    assert (recone / "priming" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((recone / "summary.json").read_text())["priming"]["steps"] > 0
    assert (recone / "eval" / "comparison.png").is_file()  # beside the RecZero run

    mine = out / "my-data"
    assert (out / "my-data-prepared" / "stats.json").is_file()
    assert "| samples train / valid / test |" in shown["your_data_colab.ipynb"]
    data = yaml.safe_load((mine / "config.yaml").read_text())["data"]
    assert (data["source"], data["path"]) == ("prepared", str(out / "my-data-prepared"))  # the CSV, not the catalog
    assert (mine / "adapter" / "adapter_model.safetensors").is_file()

    assert "the app started, answered, and was closed" in shown["app_colab.ipynb"]
    lines = (reczero / "pairs.predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("prediction" in json.loads(line) for line in lines)
