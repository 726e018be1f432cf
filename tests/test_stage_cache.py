"""Stage results are reused only when the settings that made them match; otherwise they are
recomputed with a note naming what differs (or, for a checkpoint built on them, the run stops)."""
from __future__ import annotations

import json
import shutil

from tests.test_train import kit_train


def test_reuse_only_with_equal_settings(tmp_path):
    from kit.stage_cache import forget, mismatch, remember, reusable, settings_path

    result = tmp_path / "eval_before.json"
    made = {"model": {"name": "m", "dtype": "bfloat16"}, "decoding": {"max_new_tokens": 144}, "seed": 0}
    notes: list[str] = []
    assert not reusable(result, made, notes.append) and notes == []  # nothing there: computed, no note
    result.write_text("{}")
    assert not reusable(result, made, notes.append)  # a result without a fingerprint is not trusted
    assert len(notes) == 1 and "no record of the settings" in notes[0]
    remember(result, made)
    assert settings_path(result) == tmp_path / "eval_before.settings.json"
    notes.clear()
    assert reusable(result, json.loads(json.dumps(made)), notes.append) and notes == []
    other = {**made, "model": {"name": "m", "dtype": "float32"}}
    assert not reusable(result, other, notes.append)
    assert len(notes) == 1 and 'model.dtype: "bfloat16" -> "float32"' in notes[0] and "recomputing" in notes[0]
    assert "decoding" not in notes[0]  # only what differs is named
    forget(result)
    assert mismatch(result, made) == "no record of the settings that made it"
    assert settings_path(tmp_path / "priming" / "adapter") == tmp_path / "priming" / "adapter.settings.json"


def test_train_evaluation_is_reused_or_recomputed_by_its_settings(tmp_path, tiny_model_dir):
    import kit.runtime  # noqa: F401
    from kit.config import load_config
    from kit.data import load_task_data
    from kit.model import load_model
    from kit.train import _evaluate

    # float32 pinned (smoke's `auto` is bfloat16 on a CPU with native bf16): the switch below must change it
    common = [f"model.name={tiny_model_dir}", "model.dtype=float32", "evaluation.samples=4",
              "evaluation.max_new_tokens=6"]
    cfg = load_config("smoke", common)
    data = load_task_data(cfg)
    lm = load_model(cfg.model, seed=cfg.seed)
    notes: list[str] = []
    first = _evaluate(cfg, lm, data, tmp_path, "before", log=notes.append)
    assert first["n"] == 4 and notes == [] and (tmp_path / "predictions_before.jsonl").is_file()
    saved = json.loads((tmp_path / "eval_before.json").read_text())
    saved["metrics"]["mae"] = 123.0  # a marker: a reused result returns it, a recomputed one cannot
    (tmp_path / "eval_before.json").write_text(json.dumps(saved))
    assert _evaluate(cfg, lm, data, tmp_path, "before", log=notes.append)["mae"] == 123.0 and notes == []

    longer = load_config("smoke", [*common[:-1], "evaluation.max_new_tokens=7"])
    again = _evaluate(longer, lm, data, tmp_path, "before", log=notes.append)
    assert again["mae"] != 123.0 and len(notes) == 1 and "decoding.max_new_tokens: 6 -> 7" in notes[0]

    # the case seen by a user: same folder, another dtype, and the old base-model row must not come back
    bf16 = load_config("smoke", [*common[:-1], "evaluation.max_new_tokens=7", "model.dtype=bfloat16"])
    lm16 = load_model(bf16.model, seed=bf16.seed)
    notes.clear()
    _evaluate(bf16, lm16, data, tmp_path, "before", log=notes.append)
    assert len(notes) == 1 and 'model.dtype: "float32" -> "bfloat16"' in notes[0]
    stored = json.loads((tmp_path / "eval_before.settings.json").read_text())
    assert stored["model"]["dtype"] == "bfloat16" and stored["n"] == 4


def _console(proc, out) -> str:
    log = out / "train.log"
    return proc.stdout + proc.stderr + (log.read_text() if log.is_file() else "")


def test_priming_adapter_is_reused_only_with_its_settings(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    common = ["--config", "smoke", f"output_dir={out}", "grpo.max_steps=1", "grpo.save_steps=1",
              "evaluation.samples=4", "evaluation.max_new_tokens=6"]
    kit_train(common, tiny_model_dir)
    before = json.loads((out / "summary.json").read_text())["eval_before"]
    assert json.loads((out / "priming" / "adapter.settings.json").read_text())["priming"]["learning_rate"] == 1e-3
    # stopped before GRPO finished: no adapter, no checkpoint; rerun with another priming learning rate
    for finished in ("adapter", "checkpoints"):
        shutil.rmtree(out / finished)
    proc = kit_train([*common, "priming.learning_rate=5e-4"], tiny_model_dir)
    console = _console(proc, out)
    assert "priming/adapter is not reused" in console and "priming.learning_rate: 0.001 -> 0.0005" in console
    assert "eval_before.json is not reused" not in console  # the base model's settings did not change
    assert "eval_primed.json is not reused" in console  # the primed adapter did
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_before"] == before and "priming" in summary
    assert json.loads((out / "priming" / "adapter.settings.json").read_text())["priming"]["learning_rate"] == 5e-4
    # a checkpoint trained on top of that priming cannot continue from another one
    clash = kit_train([*common, "--resume"], tiny_model_dir, check=False)
    errors = [x for x in clash.stderr.splitlines() if x.startswith("kit: error:")]
    assert clash.returncode == 2 and len(errors) == 1
    assert "checkpoint-1" in errors[0] and "priming.learning_rate: 0.0005 -> 0.001" in errors[0]
