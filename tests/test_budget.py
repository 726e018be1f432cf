"""The time-budget planner: sizes shrink to fit, never below their floors, and every change is said."""
from __future__ import annotations

import pytest

from kit.budget import Costs, Deadline, Sizes, Timeline, make_plan, priming_steps

ROUNDS = ("eval_before", "eval_primed", "eval_after")
LIMITS = Sizes(eval_pairs=16, eval_rounds=ROUNDS, priming_steps=45, grpo_steps=12)
FLOORS = Sizes(eval_pairs=8, eval_rounds=ROUNDS, priming_steps=15, grpo_steps=2)
# the cpu-demo on a 2-core CPU with native bf16: ~9.4 s per priming step, ~20 s per GRPO step, ~3.5 s per pair
BF16 = Costs(per_pair=3.5, per_priming_step=9.4, per_grpo_step=20.0, per_stage_setup=10.0, tail=20.0)
# the same on a 2-core EPYC in float32 (the figures): ~35 s per priming step, ~65 s per GRPO step
EPYC = Costs(per_pair=6.0, per_priming_step=35.0, per_grpo_step=65.0, per_stage_setup=10.0, tail=20.0)


def test_priming_steps_follow_the_trainers_arithmetic():
    assert priming_steps(60, 4, 1, 3) == 45  # the cpu-demo recipe
    assert priming_steps(60, 4, 2, 3) == 24  # 15 batches -> 8 optimizer steps per epoch (last one partial)
    assert priming_steps(10, 4, 1, 1.5) == 5  # 3 batches per epoch, 1.5 epochs rounded up
    assert priming_steps(3, 4, 1, 1) == 1


def test_without_a_budget_the_recipe_runs_as_it_is():
    plan = make_plan(LIMITS, FLOORS, BF16, None, spent_s=30)
    assert plan.sizes == LIMITS and plan.changes == [] and plan.fits


def test_a_budget_that_holds_the_recipe_changes_nothing():
    plan = make_plan(LIMITS, FLOORS, BF16, 20 * 60, spent_s=30)
    assert plan.sizes == LIMITS and plan.changes == [] and plan.total_s <= 20 * 60
    assert plan.summary_line() == ("priming 45 steps ~ 7.2 min, GRPO 12 steps ~ 4.2 min, "
                                   "evaluation 3 x 16 pairs ~ 3.0 min, set-up and baselines ~ 20 s")


def test_a_tight_budget_shrinks_every_stage_within_limits_and_floors_and_says_so():
    budget = 20 * 60
    full = make_plan(LIMITS, FLOORS, EPYC, None, spent_s=40)
    assert full.total_s > budget  # the recipe as it is would not fit on that machine
    plan = make_plan(LIMITS, FLOORS, EPYC, budget, spent_s=40)
    assert plan.fits and plan.total_s <= budget
    s = plan.sizes
    assert FLOORS.priming_steps <= s.priming_steps < LIMITS.priming_steps
    assert FLOORS.grpo_steps <= s.grpo_steps < LIMITS.grpo_steps
    assert FLOORS.eval_pairs <= s.eval_pairs < LIMITS.eval_pairs
    assert s.eval_rounds == ROUNDS  # no evaluation round is dropped
    said = " ".join(plan.changes)
    assert f"45 -> {s.priming_steps} steps" in said and f"12 -> {s.grpo_steps} steps" in said
    assert f"16 -> {s.eval_pairs} pairs" in said and "would take ~" in said
    # the largest plan that fits: one more GRPO step would not
    bigger = make_plan(LIMITS, Sizes(s.eval_pairs, ROUNDS, s.priming_steps, s.grpo_steps + 1), EPYC, None, 40)
    assert bigger.total_s > budget or s.grpo_steps + 1 > LIMITS.grpo_steps


def test_when_nothing_fits_the_floors_run_and_the_overrun_is_said():
    plan = make_plan(LIMITS, FLOORS, EPYC, 5 * 60, spent_s=40)
    assert not plan.fits and plan.sizes == Sizes(8, ROUNDS, 15, 2)
    lines = plan.describe()
    assert any("WARNING" in x and "over the" in x for x in lines)
    assert all(x.startswith("kit:") for x in lines)


def test_the_first_batch_already_answered_is_not_counted_twice():
    with_done = make_plan(LIMITS, FLOORS, Costs(3.5, 9.4, 20.0, done_pairs=8), None, 0)
    without = make_plan(LIMITS, FLOORS, Costs(3.5, 9.4, 20.0), None, 0)
    assert without.estimates["eval_before"] - with_done.estimates["eval_before"] == pytest.approx(8 * 3.5)
    assert without.estimates["eval_after"] == with_done.estimates["eval_after"]


def test_grpo_is_replanned_from_the_clock_within_limit_and_floor():
    now = [0.0]
    plan = make_plan(LIMITS, FLOORS, BF16, 20 * 60, spent_s=30)
    timeline = Timeline(plan, started=0.0, clock=lambda: now[0])
    said: list[str] = []
    now[0] = 10 * 60  # priming and two evaluations done, on time
    assert timeline.replan_grpo(said.append) == 12 and not said
    now[0] = 17 * 60  # they took far longer than planned: GRPO shrinks, and says so
    steps = timeline.replan_grpo(said.append)
    assert 2 <= steps < 12 and said and "12 -> " in said[0] and "longer than planned" in said[0]
    now[0] = 19.9 * 60  # no time left at all: the floor still runs
    assert timeline.replan_grpo(said.append) == 2


def test_a_stage_stops_before_its_next_step_would_pass_the_deadline():
    d = Deadline(at=100.0, minimum_steps=2)
    assert not d.stop_now(now=95.0, steps_done=1, stage_seconds=10.0)  # below the floor: go on
    assert d.stop_now(now=95.0, steps_done=2, stage_seconds=20.0)  # next step (10 s) would end at 105
    assert not d.stop_now(now=80.0, steps_done=2, stage_seconds=20.0)  # ends at 90
    assert not Deadline(at=None, minimum_steps=1).stop_now(1e9, 5, 10.0)  # no budget, no deadline


def test_the_base_models_round_on_fewer_pairs_costs_only_those_pairs():
    """cpu-demo scores the base model (which writes no valid answer) on 16 of its 128 pairs."""
    full = Sizes(eval_pairs=128, eval_rounds=ROUNDS, priming_steps=300, grpo_steps=16)
    fewer = Sizes(eval_pairs=128, eval_rounds=ROUNDS, priming_steps=300, grpo_steps=16, before_pairs=16)
    a, b = make_plan(full, full, BF16, None, 0), make_plan(fewer, fewer, BF16, None, 0)
    assert a.estimates["eval_before"] - b.estimates["eval_before"] == pytest.approx(112 * BF16.per_pair)
    assert a.estimates["eval_after"] == b.estimates["eval_after"]
    # a budget that shrinks GRPO keeps the base model's smaller round as it is
    tight = make_plan(fewer, Sizes(128, ROUNDS, 300, 2, 16), BF16, b.total_s - 60, 0)
    assert tight.sizes.before_pairs == 16 and tight.sizes.grpo_steps < 16
    assert "evaluation 16 + 2 x 128 pairs ~ " in b.summary_line()  # the plan line says what it costs
    assert "evaluation 3 x 128 pairs ~ " in a.summary_line()
