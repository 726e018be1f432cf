"""benchmarks/memory_fit.py: the what-fits-where table in docs/multi-gpu.md is the script's, from real shapes."""
from __future__ import annotations

import json

import pytest

from benchmarks.memory_fit import QWEN25, Shape, per_gpu, table
from tests.conftest import REPO


def test_the_published_table_is_what_the_script_prints():
    printed = table({k: v for k, v in QWEN25.items() if k != "Qwen2.5-0.5B"}, [3072, 7168], [2, 8])
    assert printed in (REPO / "docs" / "multi-gpu.md").read_text(), "docs/multi-gpu.md: the table is stale: paste the script's output"


@pytest.mark.parametrize("name", list(QWEN25))
def test_the_shapes_give_the_published_parameter_counts(name):
    shape = QWEN25[name]
    assert shape.counted_params() == pytest.approx(shape.params, rel=0.01)


def test_a_config_json_gives_the_same_figures(tmp_path):
    s = QWEN25["Qwen2.5-7B"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": s.hidden, "num_hidden_layers": s.layers, "intermediate_size": s.mlp,
                                "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
                                "vocab_size": s.vocab, "tie_word_embeddings": s.tied}))
    read = Shape.from_config(path, s.params)
    assert per_gpu(read, 7168) == per_gpu(s, 7168)
    assert per_gpu(read, 7168, zero3_gpus=8)["weights"] == pytest.approx(s.params * 2 / 8 / 2 ** 30)
