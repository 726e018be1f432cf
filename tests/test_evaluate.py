"""kit.evaluate: resumable predictions, reports with plots, baselines, comparisons."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_train import _env, kit_train


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    kit_train(["--config", "smoke", f"output_dir={out}", "evaluation.enabled=false"], tiny_model_dir)
    return out


def kit_evaluate(args, tiny_model_dir, check=True):
    proc = subprocess.run([sys.executable, "-m", "kit.evaluate", *args], cwd=REPO, env=_env(tiny_model_dir),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-4000:])
    return proc


def test_resume_after_interruption_gives_the_same_result(tmp_path, tiny_model_dir):
    import kit.runtime  # noqa: F401
    from kit.config import load_config
    from kit.data import load_task_data
    from kit.evaluate import predict, score_predictions
    from kit.model import load_adapter

    cfg = load_config("smoke", [f"model.name={tiny_model_dir}", "evaluation.batch_size=2",
                                "evaluation.max_new_tokens=12"])
    data = load_task_data(cfg)
    frame = data.split("test", 6, seed=0)
    loaded = load_adapter(cfg.model, None)
    whole = predict(loaded, frame, data, cfg, sink=tmp_path / "whole.jsonl")
    lines = (tmp_path / "whole.jsonl").read_text().splitlines()
    assert len(lines) == 6
    # interrupted after two batches, with a torn last line
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    resumed = predict(loaded, frame, data, cfg, sink=tmp_path / "cut.jsonl")
    assert [r["completion"] for r in resumed] == [r["completion"] for r in whole]
    assert json.dumps(score_predictions(resumed, data.scale)) == json.dumps(score_predictions(whole, data.scale))


def test_evaluate_cli_writes_metrics_report_and_plots(smoke_run, tiny_model_dir):
    proc = kit_evaluate(["--run", str(smoke_run), "--split", "test", "--limit", "6", "--max-new-tokens", "8"],
                        tiny_model_dir)
    out = smoke_run / "eval" / "test"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n", "mae", "rmse", "format_failure_rate", "exact_match", "within_one", "mae_by_true_rating"):
        assert key in metrics
    assert metrics["n"] == 6
    assert {"global mean", "user mean", "item mean", "user+item bias (BaselineOnly)",
            "matrix factorisation (SVD)"} <= set(metrics["baselines"])
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all({"user_id", "item_id", "rating", "prediction", "valid", "completion"} <= set(r)
                                     for r in records)
    for png in ("confusion.png", "distribution.png", "rewards.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| this model | 6 |" in report and "matrix factorisation (SVD)" in report and "noise floor" in report
    assert "| this model |" in proc.stdout
    # same settings again: everything is already predicted, nothing changes
    kit_evaluate(["--run", str(smoke_run), "--split", "test", "--limit", "6", "--max-new-tokens", "8"], tiny_model_dir)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # other generation settings into the same folder are refused, naming the setting and the fix
    clash = kit_evaluate(["--run", str(smoke_run), "--split", "test", "--limit", "6", "--max-new-tokens", "9"],
                         tiny_model_dir, check=False)
    assert clash.returncode == 2 and "--out NEW_DIR" in clash.stderr
    assert "decoding.max_new_tokens: 8 -> 9" in clash.stderr


def test_a_smaller_limit_picks_a_subset_of_a_larger_one():
    from kit.config import load_config
    from kit.data import load_task_data

    data = load_task_data(load_config("smoke"))
    whole = data.splits["test"]

    def pairs(frame):
        return list(zip(frame["user_id"], frame["item_id"]))

    chosen = [pairs(data.split("test", n, seed=3)) for n in (1, 2, 5, 9, 17, len(whole) - 1)]
    assert [len(c) for c in chosen] == [1, 2, 5, 9, 17, len(whole) - 1]
    for small, large in zip(chosen, chosen[1:]):
        assert set(small) < set(large)
    for n in (5, 17):
        frame = data.split("test", n, seed=3)
        assert frame["timestamp"].is_sorted()  # chronological inside the selection
        assert pairs(frame) == pairs(data.split("test", n, seed=3))  # seeded
    assert set(pairs(data.split("test", 9, seed=4))) != set(chosen[3])
    assert pairs(data.split("test", len(whole) + 5, seed=3)) == pairs(whole)
    # in the seeded order (what kit.evaluate walks through), a run over the whole split that stops
    # after n pairs has done exactly the n pairs that --limit n picks
    walk = pairs(data.split("test", None, seed=3, seeded_order=True))
    assert sorted(walk) == sorted(pairs(whole))
    for n in (1, 5, 17):
        assert walk[:n] == pairs(data.split("test", n, seed=3, seeded_order=True))
        assert set(walk[:n]) == set(pairs(data.split("test", n, seed=3)))


def test_resume_across_a_changed_limit(smoke_run, tiny_model_dir, tmp_path):
    out = tmp_path / "limits"
    base = ["--run", str(smoke_run), "--split", "test", "--max-new-tokens", "8", "--no-baselines", "--out", str(out)]
    kit_evaluate([*base, "--limit", "6"], tiny_model_dir)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    (out / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")  # stopped after 3 pairs
    proc = kit_evaluate([*base, "--limit", "8"], tiny_model_dir)
    assert "reusing 3 of 8 predictions" in proc.stdout
    grown = (out / "predictions.jsonl").read_text().splitlines()
    assert grown[:3] == lines[:3] and len(grown) == 8  # the 3 kept as they were, only 5 new answers
    assert len({(json.loads(x)["user_id"], json.loads(x)["item_id"]) for x in grown}) == 8
    assert json.loads((out / "metrics.json").read_text())["n"] == 8
    proc = kit_evaluate([*base, "--limit", "4"], tiny_model_dir)
    assert "reusing 4 of 4 predictions" in proc.stdout
    assert (out / "predictions.jsonl").read_text().splitlines() == grown  # nothing generated
    assert json.loads((out / "metrics.json").read_text())["n"] == 4


def test_base_model_sampling_and_compare(smoke_run, tiny_model_dir, tmp_path):
    kit_evaluate(["--run", str(smoke_run), "--adapter", "none", "--limit", "4", "--answers", "2",
                  "--temperature", "0.8", "--max-new-tokens", "8", "--no-baselines"], tiny_model_dir)
    base = smoke_run / "eval" / "test-base"
    records = [json.loads(x) for x in (base / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["answer_ratings"]) == 2 and len(r["completions"]) == 2 for r in records)
    assert json.loads((base / "settings.json").read_text())["adapter"] is None
    kit_evaluate(["--run", str(smoke_run), "--limit", "4", "--max-new-tokens", "8", "--out", str(tmp_path / "a")],
                 tiny_model_dir)
    proc = kit_evaluate(["compare", str(base), str(tmp_path / "a"), "--labels", "base", "tuned",
                         "--out", str(tmp_path)], tiny_model_dir)
    assert "| base |" in proc.stdout and "| tuned |" in proc.stdout and "baseline: global mean" in proc.stdout
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_baselines_only_needs_no_model(tiny_model_dir):
    proc = kit_evaluate(["--config", "smoke", "--baselines-only", "--split", "test"], tiny_model_dir)
    assert "matrix factorisation (SVD)" in proc.stdout and "noise floor" in proc.stdout


def test_baselines_only_writes_its_report_to_out(tiny_model_dir, tmp_path):
    out = tmp_path / "baselines"
    proc = kit_evaluate(["--config", "smoke", "--baselines-only", "--split", "test", "--out", str(out)],
                        tiny_model_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "matrix factorisation (SVD)" in metrics["baselines"] and metrics["n"] > 0
    assert metrics["noise_floor"]["mae"] >= 0
    report = (out / "report.md").read_text()
    assert "matrix factorisation (SVD)" in report and "noise floor" in report
    assert str(out / "report.md") in proc.stdout


def test_baselines_only_says_what_to_pass(tiny_model_dir):
    proc = kit_evaluate(["--baselines-only"], tiny_model_dir, check=False)
    assert proc.returncode == 2 and "matrix" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("kit: error:")
    assert "--data PREPARED_DIR" in proc.stderr and "--config RECIPE" in proc.stderr


def test_load_prepared_is_importable_from_kit_data():
    from kit.data import load_prepared
    from kit.data.prepare import load_prepared as defined

    assert load_prepared is defined
