"""The Colab notebook calls the kit's own functions: every name it imports from kit exists."""
from __future__ import annotations

import ast
import importlib
import json

from tests.conftest import REPO


def test_notebook_cells_compile_and_kit_imports_resolve():
    nb = json.loads((REPO / "notebooks" / "reczero_colab.ipynb").read_text())
    imported = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(line for line in cell["source"] if not line.lstrip().startswith(("!", "%")))
        tree = ast.parse(src)
        imported += [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and (node.module or "").startswith("kit") for alias in node.names]
    assert len(imported) >= 8
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
