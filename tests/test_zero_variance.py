"""Zero-variance GRPO groups: found, left out of the loss, counted, and redrawn when a batch has none to learn from."""
from __future__ import annotations

import json

import torch

from kit.model import lora_nonzero
from kit.zero_variance import zero_variance_rows
from tests.test_train import kit_train


def test_rows_of_a_group_with_equal_rewards_are_found():
    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.2, -0.4, -0.8, 0.0])  # the second group's last answer is its mean
    assert zero_variance_rows(adv, 4).tolist() == [True] * 4 + [False] * 4
    per_token = adv.unsqueeze(1).expand(8, 3)  # advantages broadcast over tokens
    assert zero_variance_rows(per_token, 4).tolist() == [True] * 4 + [False] * 4
    # rows that do not split into whole groups count one by one
    assert zero_variance_rows(torch.tensor([0.0, 0.5, 0.0]), 2).tolist() == [True, False, True]


def _grpo_lines(out):
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["phase"] == "grpo" and "reward" in x]


ONLY_GRPO = ["priming.enabled=false", "evaluation.enabled=false", "grpo.max_steps=2"]


def test_a_batch_of_identical_rewards_is_redrawn_then_left_out_of_the_loss(tmp_path, tiny_model_dir):
    """The random model never writes the format: every answer scores -1, every group has zero
    variance. Each step draws new prompts twice, counts every group, and trains on nothing."""
    out = tmp_path / "skip"
    kit_train(["--config", "smoke", f"output_dir={out}", *ONLY_GRPO, "rewards=[{name: format}]",
               "grpo.zero_variance=skip", "grpo.max_redraws=2"], tiny_model_dir)
    steps = _grpo_lines(out)
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert s["zero_variance/redraws"] == 2 and s["zero_variance/share"] == 1.0
        assert s["zero_variance/skipped"] == 1  # smoke: one prompt of 4 answers per step
    nonzero, total = lora_nonzero(out / "adapter")
    assert total > 0 and nonzero == 0  # no loss from any of them: LoRA B never left zero


def test_groups_that_differ_are_kept_and_train(tmp_path, tiny_model_dir):
    out = tmp_path / "differ"
    kit_train(["--config", "smoke", f"output_dir={out}", *ONLY_GRPO,
               "rewards=[{name: 'tests.reward_plugin:distinct_chars'}]", "grpo.zero_variance=skip"], tiny_model_dir)
    for s in _grpo_lines(out):
        assert s["zero_variance/redraws"] == 0 and s["zero_variance/share"] == 0.0 and s["zero_variance/skipped"] == 0
    nonzero, total = lora_nonzero(out / "adapter")
    assert nonzero == total > 0


def test_keep_is_trls_behaviour_and_still_counts(tmp_path, tiny_model_dir):
    out = tmp_path / "keep"
    kit_train(["--config", "smoke", f"output_dir={out}", *ONLY_GRPO, "rewards=[{name: format}]",
               "grpo.zero_variance=keep"], tiny_model_dir)
    for s in _grpo_lines(out):
        assert s["zero_variance/redraws"] == 0 and s["zero_variance/share"] == 1.0 and s["zero_variance/skipped"] == 0
        assert s["frac_reward_zero_std"] == 1.0


def test_in_a_mixed_batch_only_the_groups_that_cannot_teach_are_skipped(tmp_path, tiny_model_dir):
    out = tmp_path / "mixed"
    kit_train(["--config", "smoke", f"output_dir={out}", *ONLY_GRPO, "grpo.max_steps=4",
               "grpo.per_device_train_batch_size=8", "rewards=[{name: 'tests.reward_plugin:distinct_chars_for_even_users'}]",
               "grpo.zero_variance=skip"], tiny_model_dir)
    steps = _grpo_lines(out)
    skipped = sum(s["zero_variance/skipped"] for s in steps)
    assert 0 < skipped < 2 * len(steps)  # two prompts a step: some groups skipped, not all
    for s in steps:  # without a redraw, the skipped groups are the zero-variance ones of the one batch
        if s["zero_variance/redraws"] == 0:
            assert s["zero_variance/skipped"] == 2 * s["zero_variance/share"]
    assert any(s["zero_variance/redraws"] > 0 and s["zero_variance/share"] < 1 for s in steps)  # redrawn, then kept
    nonzero, total = lora_nonzero(out / "adapter")
    assert nonzero == total > 0


def test_two_processes_redraw_together(tmp_path, tiny_model_dir):
    """Whether to redraw is decided across processes (rewards are normalised over all of them): a
    batch with nothing to learn anywhere is redrawn by both, and the run finishes."""
    import subprocess
    import sys

    from tests.test_backends import _env, _free_port
    from tests.conftest import REPO

    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "templates/accelerate/ddp.yaml",
           "--num_processes", "2", "--main_process_port", str(_free_port()),
           "-m", "kit.train", "--config", "smoke", "backend=trl", f"output_dir={out}", *ONLY_GRPO,
           "rewards=[{name: format}]", "grpo.zero_variance=skip", "grpo.max_redraws=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tiny_model_dir), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = _grpo_lines(out)
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["zero_variance/redraws"] == 1 and s["zero_variance/share"] == 1.0 for s in steps)
