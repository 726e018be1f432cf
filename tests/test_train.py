"""GRPO end to end with real parts: Unsloth's CPU path, TRL's GRPOTrainer, a tiny model."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def _env(tiny_model_dir: Path) -> dict:
    env = dict(os.environ, KIT_CACHE=str(tiny_model_dir.parent), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def kit_train(args: list[str], tiny_model_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "kit.train", *args], cwd=REPO, env=_env(tiny_model_dir),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"kit.train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


GRPO_ONLY = ["priming.enabled=false", "evaluation.enabled=false",
             "rewards=[{name: 'tests.reward_plugin:distinct_chars'}, {name: format}]"]


def test_smoke_recipe_cli_leaves_adapter_config_and_metrics(tmp_path, tiny_model_dir):
    out = tmp_path / "smoke"
    proc = kit_train(["--config", "templates/recipes/smoke.yaml", f"output_dir={out}"], tiny_model_dir)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "tokenizer.json").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["output_dir"] == str(out) and saved["grpo"]["max_steps"] == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    grpo = [x for x in lines if x["phase"] == "grpo" and "reward" in x]
    assert [x["step"] for x in grpo] == [1, 2, 3, 4]
    for key in ("rewards/format/mean", "rewards/rating/mean", "rewards/graded_format/mean", "reward_std",
                "frac_reward_zero_std", "completions/mean_length"):
        assert all(key in x for x in grpo), key
    assert any(x["phase"] == "priming" and "loss" in x for x in lines)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("eval_before", "eval_primed", "eval_after"):
        assert summary[key]["n"] == 8 and 0 <= summary[key]["format_failure_rate"] <= 1
    assert "| after GRPO |" in proc.stdout and "noise floor" in proc.stdout
    completions = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert [c["step"] for c in completions] == [0, 2]  # every log_completions_every=2 steps
    assert set(completions[0]["rewards"]) == {"format", "rating", "graded_format"}
    # the precision auto chose, and why, is in the run's config
    assert saved["model"]["dtype"] == "auto" and saved["resolved"]["dtype"] in ("bfloat16", "float32")
    assert saved["resolved"]["dtype_reason"].startswith("auto: this CPU")
    assert sum("kit: precision" in x for x in proc.stdout.splitlines()) == 1
    # a quiet console: the trainers' dictionaries, sample completions and known library noise are
    # not on it but in train.log; the ending says what the random model's answers are
    console = proc.stdout + proc.stderr
    for noise in ("'loss':", "'completions/mean_length'", "[grpo step", "[step 0]", "register_constant",
                  "clean_up_tokenization_spaces", "Tokenizing train dataset"):
        assert noise not in console, noise
    log = (out / "train.log").read_text()
    assert "[grpo step 4]" in log and "[step 2] true rating" in log and "Unsloth (CPU)" in log
    assert "kit: install OK" in proc.stdout and "gibberish" in proc.stdout
    assert f"-m kit.evaluate --run {out}" in proc.stdout and f"-m kit.app --run {out}" in proc.stdout
    # (text mode turns a bar's in-place redraws into lines: count the other lines)
    frames = re.compile(r"^(evaluation \(\w+\)|format priming|GRPO): \d+/\d+ \w+s \[")
    assert len([x for x in console.splitlines() if x.strip() and not frames.match(x)]) < 35, console
    for c in completions:  # the recipe's weights and the weighted total, as the app shows them
        assert c["weights"] == {"format": 1.0, "rating": 1.0, "graded_format": 0.5}
        assert c["total"] == pytest.approx(sum(c["weights"][k] * v for k, v in c["rewards"].items()))


def test_grpo_moves_lora_and_the_adapter_reloads(tmp_path, tiny_model_dir):
    import kit.runtime  # noqa: F401
    import torch

    from kit.config import load_config
    from kit.model import adapter_context, generate, load_adapter
    from kit.prompts import render_chat
    from kit.model import lora_nonzero

    out = tmp_path / "grpo"
    kit_train(["--config", "smoke", f"output_dir={out}", "grpo.max_steps=3", *GRPO_ONLY], tiny_model_dir)
    nonzero, total = lora_nonzero(out / "adapter")
    assert total > 0 and nonzero == total  # lora_B starts at zero: GRPO alone moved every one
    cfg = load_config(out / "config.yaml")
    cfg.model.name = str(tiny_model_dir)
    tuned = load_adapter(cfg.model, out / "adapter")
    base = load_adapter(cfg.model, None)
    prompt = render_chat(tuned.tokenizer, [{"role": "user", "content": "Rate this book."}])
    ids = tuned.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():  # one model in memory: each handle switches on its own adapter (or none)
        with adapter_context(tuned) as model:
            tuned_logits = model(**ids).logits
        with adapter_context(base) as model:
            base_logits = model(**ids).logits
    diff = (tuned_logits - base_logits).abs().max().item()
    assert diff > 0  # the reloaded adapter changes the model's output
    texts = generate(tuned, [prompt, prompt], max_new_tokens=8, progress=False)
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)


def test_resume_keeps_the_step_count(tmp_path, tiny_model_dir):
    out = tmp_path / "resume"
    common = ["--config", "smoke", f"output_dir={out}", "grpo.save_steps=1", *GRPO_ONLY]
    kit_train([*common, "grpo.max_steps=2"], tiny_model_dir)
    again = kit_train([*common, "grpo.max_steps=4"], tiny_model_dir, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr  # a finished run is never overwritten silently
    kit_train([*common, "grpo.max_steps=4", "--resume"], tiny_model_dir)
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["phase"] == "grpo" and "reward" in json.loads(x)]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("override,message", [
    ("grpo.num_generations=3", "must divide the generation batch"),
    ("rewards=[{name: nope}]", "not a registered name"),
    ("grpo.max_stepz=3", "unknown config key"),
    ("rewards=[{name: exact_match, kwargs: {hits: 1}}]", "reward 'exact_match': unknown kwarg 'hits'"),
])
def test_bad_config_fails_fast_with_one_line(override, message, tiny_model_dir, tmp_path):
    proc = kit_train(["--config", "smoke", f"output_dir={tmp_path}/x", override], tiny_model_dir, check=False)
    assert proc.returncode == 2
    errors = [x for x in proc.stderr.splitlines() if x.startswith("kit: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "x").exists()  # nothing was started


def test_validate_prints_the_resolved_config_and_a_verdict(tiny_model_dir):
    proc = kit_train(["--config", "smoke", "--validate", "grpo.max_steps=9"], tiny_model_dir)
    *config, verdict = proc.stdout.strip().splitlines()
    assert yaml.safe_load("\n".join(config))["grpo"]["max_steps"] == 9
    assert verdict.startswith("kit: config OK: smoke, 9 GRPO steps, 32 training prompts fit (of 32)")
    assert "priming 4 SFT steps on 16 answers" in verdict and "8 of 8 evaluation prompts fit" in verdict
    # the trainers' arithmetic, as the budget plans it: 3 batches -> 2 accumulated steps per epoch, x 2.5
    odd = kit_train(["--config", "smoke", "--validate", "priming.samples=10", "priming.batch_size=4",
                     "priming.gradient_accumulation_steps=2", "priming.epochs=2.5"], tiny_model_dir)
    assert "priming 5 SFT steps on 10 answers" in odd.stdout.strip().splitlines()[-1]
    tight = kit_train(["--config", "smoke", "--validate", "prompt.max_prompt_tokens=40"], tiny_model_dir, check=False)
    assert tight.returncode == 2
    assert tight.stderr.strip().splitlines()[-1].startswith("kit: error: no training prompt fits")


def test_verbose_brings_the_trainers_output_back(tmp_path, tiny_model_dir):
    out = tmp_path / "verbose"
    proc = kit_train(["--config", "smoke", f"output_dir={out}", "grpo.max_steps=1", *GRPO_ONLY, "--verbose"],
                     tiny_model_dir)
    assert "[grpo step 1]" in proc.stdout and "'loss'" in proc.stdout + proc.stderr
    assert "[grpo step 1]" in (out / "train.log").read_text()


def test_a_budget_too_small_runs_every_stage_at_its_floor_and_says_so(tmp_path, tiny_model_dir):
    """Half a minute cannot hold even the smallest plan: it runs anyway, with every stage, and says
    so. Unsloth's switch makes this CPU count as one without native bf16: a forced bf16 warns."""
    out = tmp_path / "budget"
    env = dict(_env(tiny_model_dir), UNSLOTH_CPU_BF16="0")
    proc = subprocess.run([sys.executable, "-m", "kit.train", "--config", "smoke", f"output_dir={out}",
                           "budget.minutes=0.5", "priming.epochs=2", "evaluation.samples=16", "grpo.max_steps=6",
                           "model.dtype=bfloat16"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [x for x in proc.stdout.splitlines() if "without native bfloat16" in x]
    assert len(warnings) == 1 and "33.6 s" in warnings[0]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["fits"] is False and "over the" in proc.stdout
    assert plan["sizes"] == plan["floors"]
    assert plan["sizes"]["priming_steps"] == 4 < plan["limits"]["priming_steps"] == 8  # one of two epochs
    assert plan["sizes"]["grpo_steps"] == 2 and plan["sizes"]["eval_pairs"] == 8
    assert plan["measured"]["per_pair_s"] > 0 and plan["measured"]["probe_step_s"] > 0
    assert "format priming: 8 -> 4 steps" in proc.stdout and "GRPO: 6 -> 2 steps" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    for stage in ("eval_before", "eval_primed", "eval_after"):  # no stage dropped
        assert summary[stage]["n"] == 8
    assert summary["priming"]["steps"] == 4 and summary["grpo"]["steps"] == 2
    assert summary["plan"]["sizes"] == plan["sizes"] and summary["budget_s"] == 30
    assert len((out / "predictions_before.jsonl").read_text().splitlines()) == 8


def test_a_ten_point_synthetic_scale_trains_and_evaluates_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "ten"
    proc = kit_train(["--config", "smoke", f"output_dir={out}", "data.synthetic.scale=[1, 10]", "grpo.max_steps=2",
                      "evaluation.before_training=false", "evaluation.samples=4"], tiny_model_dir)
    assert "scale 1-10" in proc.stdout
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["synthetic"]["scale"] == [1, 10] and saved["rating_scale"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_after"]["n"] == 4 and summary["noise_floor"]["mae"] > 0
    from tests.test_evaluate import kit_evaluate

    kit_evaluate(["--run", str(out), "--limit", "4", "--max-new-tokens", "8", "--no-baselines",
                  "--out", str(tmp_path / "eval")], tiny_model_dir)
    settings = json.loads((tmp_path / "eval" / "settings.json").read_text())
    assert settings["scale"] == [1.0, 10.0]
    truths = [json.loads(x)["rating"] for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(truths) == 4 and all(1 <= t <= 10 for t in truths)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "scale 1-10" in report


def test_a_recipe_scale_that_disagrees_with_the_data_stops_before_any_model_loads(tmp_path, tiny_model_dir):
    proc = kit_train(["--config", "smoke", f"output_dir={tmp_path}/x", "rating_scale.max=10"], tiny_model_dir,
                     check=False)
    assert proc.returncode == 2 and not (tmp_path / "x").exists()
    [error] = [x for x in proc.stderr.splitlines() if x.startswith("kit: error:")]
    assert "rating_scale ?-10 in the recipe disagrees with the data's scale 1-5" in error
    assert "Unsloth" not in proc.stderr + proc.stdout  # stopped before the model stack was even imported


def test_each_trained_round_is_tested_against_the_item_average_and_svd(tmp_path, tiny_model_dir):
    """The base model may be scored on fewer pairs; it is then compared on the pairs it has. After
    SFT and after GRPO are each tested, paired, against the item's earlier average and SVD."""
    out = tmp_path / "tests"
    proc = kit_train(["--config", "smoke", f"output_dir={out}", "grpo.max_steps=1", "evaluation.before_samples=4"],
                     tiny_model_dir)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_before"]["n"] == 4 and summary["eval_primed"]["n"] == summary["eval_after"]["n"] == 8
    tests = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert tests[("after GRPO", "base model")]["n"] == 4 and tests[("after GRPO", "after SFT")]["n"] == 8
    for stage in ("after SFT", "after GRPO"):
        for baseline in ("item earlier average", "matrix factorisation (SVD)"):
            assert tests[(stage, f"baseline: {baseline}")]["n"] == 8
    assert "matrix factorisation (SVD)" in summary["baselines"]
    from kit.ending import verdict  # (a random model's run prints "install OK" instead of it)

    text = verdict(summary)
    assert "Against item earlier average on the same pairs" in text
    assert "after SFT" in text.split("Against matrix factorisation (SVD)")[1]
    assert "| after GRPO |" in proc.stdout
    assert len((out / "predictions_before.jsonl").read_text().splitlines()) == 4
