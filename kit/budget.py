"""Fit a run into a wall-clock budget: measure this machine, size the stages, say what changed.

A recipe's sizes (evaluation pairs, priming steps, GRPO steps) are upper bounds. With a
budget, the run first measures a few things it will do anyway (the first evaluation batch,
one priming step's forward and backward), estimates each stage, and, when the whole does not
fit, shrinks all three by one common factor down to floors that keep each stage meaningful.
No stage is ever dropped: when even the floors do not fit, the plan says how long it will
take instead. Stages are re-planned with measured times as the run goes (`make_plan` again),
and a trainer stops early, saying so, when its next step would eat into what follows.

`make_plan` is a pure function of the sizes, the measured costs and the clock.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from kit.progress import format_duration

STAGES = ("eval_before", "priming", "eval_primed", "grpo", "eval_after")
STAGE_LABELS = {"eval_before": "evaluation (base model)", "priming": "format priming", "eval_primed":
                "evaluation (after priming)", "grpo": "GRPO", "eval_after": "evaluation (after GRPO)"}


@dataclass(frozen=True)
class Sizes:
    """What a run does. As limits: the recipe's values; as floors: the least the budget may leave."""

    eval_pairs: int  # pairs per evaluation round
    eval_rounds: tuple[str, ...]  # which of eval_before / eval_primed / eval_after still run
    priming_steps: int  # 0: no priming (disabled or already done)
    grpo_steps: int
    before_pairs: int | None = None  # the base model's round on fewer pairs (None: eval_pairs)

    def rounds_text(self) -> str:
        """`3 x 16`, or `16 + 2 x 128` when the base model's round is on fewer pairs."""
        before = min(self.before_pairs or self.eval_pairs, self.eval_pairs)
        if "eval_before" not in self.eval_rounds or before == self.eval_pairs:
            return f"{len(self.eval_rounds)} x {self.eval_pairs}"
        rest = len(self.eval_rounds) - 1
        return f"{before}" + (f" + {rest} x {self.eval_pairs}" if rest else "")


@dataclass(frozen=True)
class Costs:
    """Seconds, measured on this machine (or estimated from what was measured)."""

    per_pair: float  # one evaluation pair, greedy, at the evaluation batch size
    per_priming_step: float
    per_grpo_step: float
    per_stage_setup: float = 10.0  # building a trainer's dataset, saving, loading an evaluation
    tail: float = 20.0  # baselines, the adapter save, the summary
    done_pairs: int = 0  # evaluation pairs of the first round already answered (the calibration batch)


@dataclass
class Plan:
    sizes: Sizes
    limits: Sizes
    estimates: dict[str, float]  # seconds per stage, in STAGES order (+ "setup and tail")
    budget_s: float | None
    spent_s: float
    fits: bool = True
    changes: list[str] = field(default_factory=list)
    floors: Sizes | None = None
    costs: Costs | None = None

    @property
    def measured(self) -> bool:
        return self.costs is not None

    @property
    def total_s(self) -> float:
        return self.spent_s + sum(self.estimates.values())

    def left_after(self, stage: str) -> float:
        """Estimated seconds of the stages after `stage` (and the tail)."""
        later = STAGES[STAGES.index(stage) + 1:] if stage in STAGES else ()
        return sum(self.estimates.get(s, 0.0) for s in later) + self.estimates.get("setup and tail", 0.0)

    def summary_line(self) -> str:
        """`priming 45 steps ~ 7 min, GRPO 12 steps ~ 4 min, evaluation 3 x 16 pairs ~ 3 min`"""
        s, e = self.sizes, self.estimates

        def took(seconds: float) -> str:
            return f" ~ {format_duration(seconds)}" if self.measured else ""

        parts = []
        if s.priming_steps:
            parts.append(f"priming {s.priming_steps} steps{took(e.get('priming', 0))}")
        if s.grpo_steps:
            parts.append(f"GRPO {s.grpo_steps} steps{took(e.get('grpo', 0))}")
        if s.eval_rounds:
            seconds = sum(e.get(r, 0.0) for r in s.eval_rounds)
            parts.append(f"evaluation {s.rounds_text()} pairs{took(seconds)}")
        if self.measured:
            parts.append(f"set-up and baselines{took(e.get('setup and tail', 0))}")
        return ", ".join(parts)

    def describe(self) -> list[str]:
        """The lines a run prints about its plan (what shrank and why included)."""
        total = format_duration(self.total_s)
        if self.budget_s is None:
            return [f"kit: plan: {self.summary_line()}" + (f" (total ~ {total})" if self.measured else "")]
        lines = [f"kit: plan for a {format_duration(self.budget_s)} budget: {self.summary_line()} "
                 f"(total ~ {total}, measured here)"]
        if not self.fits:
            lines.append(f"kit: WARNING: even the smallest plan needs ~ {total}, over the "
                         f"{format_duration(self.budget_s)} budget; running it anyway (raise budget.minutes, "
                         "or lower the budget's floors)")
        lines += [f"kit: to fit the budget, {c}" for c in self.changes]
        return lines

    def as_dict(self) -> dict:
        return {"budget_s": self.budget_s, "spent_s": round(self.spent_s, 1), "total_s": round(self.total_s, 1),
                "fits": self.fits, "sizes": asdict(self.sizes), "limits": asdict(self.limits),
                "estimates_s": {k: round(v, 1) for k, v in self.estimates.items()}, "changes": self.changes,
                "floors": asdict(self.floors) if self.floors else None,
                "costs_s": {k: round(v, 3) for k, v in asdict(self.costs).items()} if self.costs else None}


def _estimates(sizes: Sizes, costs: Costs) -> dict[str, float]:
    est: dict[str, float] = {}
    for stage in STAGES:
        if stage.startswith("eval_"):
            if stage in sizes.eval_rounds:
                pairs = sizes.eval_pairs
                if stage == "eval_before":
                    pairs = min(pairs, sizes.before_pairs or pairs) - costs.done_pairs
                est[stage] = max(0, pairs) * costs.per_pair + costs.per_stage_setup / 2
        elif stage == "priming" and sizes.priming_steps:
            est[stage] = sizes.priming_steps * costs.per_priming_step + costs.per_stage_setup
        elif stage == "grpo" and sizes.grpo_steps:
            est[stage] = sizes.grpo_steps * costs.per_grpo_step + costs.per_stage_setup
    est["setup and tail"] = costs.tail
    return est


def _scaled(limits: Sizes, floors: Sizes, f: float) -> Sizes:
    def one(limit: int, floor: int) -> int:
        return min(limit, max(min(floor, limit), math.floor(limit * f + 1e-9)))

    return Sizes(one(limits.eval_pairs, floors.eval_pairs), limits.eval_rounds,
                 one(limits.priming_steps, floors.priming_steps), one(limits.grpo_steps, floors.grpo_steps),
                 limits.before_pairs)


def make_plan(limits: Sizes, floors: Sizes, costs: Costs, budget_s: float | None, spent_s: float,
              describe_priming: Callable[[int], str] | None = None) -> Plan:
    """The largest sizes, all shrunk by one common factor, whose estimate fits `budget_s` (time
    since the run started included); the limits when there is no budget or they fit; the floors,
    marked as not fitting, when nothing fits. Every size that shrank is named in `changes`."""
    def plan_for(sizes: Sizes) -> Plan:
        return Plan(sizes, limits, _estimates(sizes, costs), budget_s, spent_s, floors=floors, costs=costs)

    full = plan_for(limits)
    if budget_s is None or full.total_s <= budget_s:
        return full
    smallest = plan_for(_scaled(limits, floors, 0.0))
    if smallest.total_s > budget_s:
        chosen, fits = smallest, False
    else:
        lo, hi = 0.0, 1.0  # invariant: lo fits, hi does not
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if plan_for(_scaled(limits, floors, mid)).total_s <= budget_s else (lo, mid)
        chosen, fits = plan_for(_scaled(limits, floors, lo)), True
    chosen.fits = fits
    s = chosen.sizes
    lead = f"the recipe's sizes would take ~ {format_duration(full.total_s)} here"
    if s.priming_steps < limits.priming_steps:
        how = f" ({describe_priming(s.priming_steps)})" if describe_priming else ""
        chosen.changes.append(f"format priming: {limits.priming_steps} -> {s.priming_steps} steps{how}")
    if s.grpo_steps < limits.grpo_steps:
        chosen.changes.append(f"GRPO: {limits.grpo_steps} -> {s.grpo_steps} steps")
    if s.eval_pairs < limits.eval_pairs:
        chosen.changes.append(f"evaluation: {limits.eval_pairs} -> {s.eval_pairs} pairs per round")
    if chosen.changes:
        chosen.changes[0] = f"{chosen.changes[0]} ({lead})"
    return chosen


def priming_steps(samples: int, batch_size: int, accumulation: int, epochs: float) -> int:
    """Optimizer steps of `epochs` over `samples` (the trainers' own arithmetic)."""
    per_epoch = max(math.ceil(math.ceil(samples / batch_size) / accumulation), 1)
    return max(1, math.ceil(epochs * per_epoch))


GRPO_TRAIN_FACTOR = 1.0  # a GRPO step's forward + backward vs a priming step over as many sequences


def grpo_step_estimate(generation_s: float, training_pass_s: float) -> float:
    """A GRPO step before one has run: sampling the step's completions (measured on a short
    generation and extrapolated) plus a forward and backward pass over prompts and completions,
    which costs about what a priming step over as many sequences costs."""
    return generation_s + training_pass_s * GRPO_TRAIN_FACTOR


class Deadline:
    """When a stage must stop so that the stages after it still fit: `stop_now` says whether the
    next step (at the pace measured so far) would end past it."""

    def __init__(self, at: float | None, minimum_steps: int):
        self.at, self.minimum_steps = at, minimum_steps

    def stop_now(self, now: float, steps_done: int, stage_seconds: float) -> bool:
        if self.at is None or steps_done < self.minimum_steps or steps_done == 0:
            return False
        return now + stage_seconds / steps_done > self.at


class Timeline:
    """The run's clock against its plan: when each stage began and ended, the running ETA, the
    deadline of a stage, and the GRPO re-plan once the stages before it have been measured."""

    def __init__(self, plan: Plan, started: float, clock: Callable[[], float] | None = None):
        import time

        self.plan, self.started, self.clock = plan, started, clock or time.time
        self.actual: dict[str, float] = {}
        self._begun: dict[str, float] = {}

    def begin(self, stage: str) -> None:
        self._begun[stage] = self.clock()

    def end(self, stage: str) -> None:
        self.actual[stage] = round(self.clock() - self._begun.get(stage, self.clock()), 1)

    def deadline(self, reserve_s: float) -> float | None:
        """The time by which a stage must end so that `reserve_s` is left in the budget."""
        if self.plan.budget_s is None:
            return None
        return self.started + self.plan.budget_s - reserve_s

    def figures(self, stage: str, done: int, total: int) -> dict[str, str]:
        """Step time and, with a measured plan, the time left for the whole run."""
        elapsed = self.clock() - self._begun.get(stage, self.clock())
        shown: dict[str, str] = {}
        if done:
            shown["step"] = f"{elapsed / done:.1f}s"
        if self.plan.measured:
            here = elapsed / done * (total - done) if done else self.plan.estimates.get(stage, 0.0)
            shown["run left"] = f"~{format_duration(here + self.plan.left_after(stage))}"
        return shown

    def replan_grpo(self, say: Callable[[str], None]) -> int:
        """GRPO steps for the time actually left (never above the recipe's, never below the floor),
        said when it differs from the plan."""
        plan = self.plan
        planned = plan.sizes.grpo_steps
        if plan.budget_s is None or plan.costs is None or not plan.costs.per_grpo_step:
            return planned
        left = self.started + plan.budget_s - self.clock() - plan.left_after("grpo") - plan.costs.per_stage_setup
        floor = min(plan.floors.grpo_steps if plan.floors else 1, plan.limits.grpo_steps)
        steps = min(plan.limits.grpo_steps, max(floor, math.floor(left / plan.costs.per_grpo_step)))
        if steps != planned:
            why = "the stages before took longer than planned" if steps < planned else \
                "the stages before were faster than planned"
            say(f"kit: GRPO: {planned} -> {steps} steps ({why}; the recipe's {plan.limits.grpo_steps} is the most)")
            plan.sizes = replace(plan.sizes, grpo_steps=steps)
            plan.estimates["grpo"] = steps * plan.costs.per_grpo_step + plan.costs.per_stage_setup
        return steps
