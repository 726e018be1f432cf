"""GRPO groups that cannot teach: skipped, counted, and redrawn when a whole batch has none to learn from.

A group whose answers all earn the same reward has advantage 0 for every answer. With beta 0 it
adds nothing to the gradient, yet its tokens still count in the loss's normaliser (`dapo` divides by
every token of the generation batch), so it shrinks the step of the groups that do teach. A small
model after supervised priming often writes the same rating four times, so on a CPU recipe with one
prompt per step most steps would train on nothing.

`grpo.zero_variance: skip` (DAPO's dynamic sampling, at the granularity TRL's buffered batches
allow): the answers of zero-variance groups are taken out of the loss (their completion mask is
zeroed and the normaliser recounted), and when no group of the generation batch is left, a new
batch of prompts is drawn from the training set and answered, up to `grpo.max_redraws` times. A
partly informative batch is kept as it is, minus its zero-variance groups. `keep` is TRL's own
behaviour. Either way the counts are logged: `zero_variance/share` (of the groups generated in the
step, redraws included), `zero_variance/skipped` (groups left out of the loss) and
`zero_variance/redraws`.

Caveat: with `loss_type: grpo` the loss is a mean over sequences, and the skipped ones still count
in it; `dapo` (the kit's default), `bnpo` and `dr_grpo` do not have that dilution after the recount
(`dr_grpo` never had it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def zero_variance_rows(advantages: torch.Tensor, group: int) -> torch.Tensor:
    """True for each row whose group's answers all have advantage 0 (equal rewards). Rows come in
    groups of `group` consecutive answers to one prompt; where the rows of a process do not split
    into whole groups, a row counts on its own (advantage exactly 0 teaches nothing either)."""
    flat = advantages.reshape(advantages.shape[0], -1).abs().amax(dim=1) == 0
    if group > 1 and flat.numel() % group == 0:
        return flat.view(-1, group).all(dim=1).repeat_interleave(group)
    return flat


def with_zero_variance_handling(trainer_cls: type, mode: str, max_redraws: int, seed: int) -> type:
    """`trainer_cls` (TRL's GRPOTrainer, or Unsloth's patched one) with zero-variance groups
    handled as `mode` says ("keep" or "skip", see the module doc)."""

    class KitGRPOTrainer(trainer_cls):
        _kit_draws = 0

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return out
            group = self.num_generations
            zero = zero_variance_rows(out["advantages"], group)
            seen, zero_seen, redraws = _groups(zero, group), _groups(zero, group, True), 0
            while mode == "skip" and redraws < max_redraws and self._kit_all_zero(zero):
                redraws += 1
                inputs = self._kit_draw(len(inputs), group)
                out = super()._generate_and_score_completions(inputs)
                zero = zero_variance_rows(out["advantages"], group)
                seen, zero_seen = seen + _groups(zero, group), zero_seen + _groups(zero, group, True)
            skipped = 0
            if mode == "skip" and bool(zero.any()):
                mask = out["completion_mask"] * (~zero).unsqueeze(1).to(out["completion_mask"].dtype)
                out["completion_mask"] = mask
                loss_mask = mask if out.get("tool_mask") is None else mask * out["tool_mask"]
                out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
                skipped = _groups(zero, group, True)
            metrics = self._metrics["train"]
            metrics["zero_variance/share"].append(zero_seen / max(1, seen))
            metrics["zero_variance/skipped"].append(float(skipped))
            metrics["zero_variance/redraws"].append(float(redraws))
            return out

        def _kit_all_zero(self, zero: torch.Tensor) -> bool:
            """Whether no process has a group to learn from (decided together: every process redraws or none)."""
            informative = (~zero).sum().reshape(1).to(self.accelerator.device)
            return int(self.accelerator.gather(informative).sum()) == 0

        def _kit_draw(self, rows: int, group: int) -> list[dict[str, Any]]:
            """Fresh prompts from the training set, each repeated for its group (seeded per process)."""
            KitGRPOTrainer._kit_draws += 1
            rng = np.random.default_rng([seed, self.accelerator.process_index, KitGRPOTrainer._kit_draws])
            picks = rng.choice(len(self.train_dataset), size=max(1, rows // group), replace=True)
            return [self.train_dataset[int(i)] for i in picks for _ in range(group)]

    KitGRPOTrainer.__name__ = KitGRPOTrainer.__qualname__ = f"ZeroVariance{trainer_cls.__name__}"
    return KitGRPOTrainer


def _groups(zero: torch.Tensor, group: int, only_zero: bool = False) -> int:
    """How many groups the rows make (or, with `only_zero`, how many of them have zero variance)."""
    rows = int(zero.sum()) if only_zero else zero.numel()
    return rows // group if zero.numel() % group == 0 else rows
