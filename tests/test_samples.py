"""Sample building never leaks the future, and matches a brute-force reference exactly."""
from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.data.samples import build_samples, plan_samples, split_leave_last_out


def brute_force(rows, n_user, n_item, min_history):
    """The definition, written the slow obvious way."""
    out = {}
    for r in rows:
        earlier_u = sorted([x for x in rows if x["user_id"] == r["user_id"] and x["timestamp"] < r["timestamp"]],
                           key=lambda x: (x["timestamp"], x["item_id"]))
        earlier_i = sorted([x for x in rows if x["item_id"] == r["item_id"] and x["timestamp"] < r["timestamp"]],
                           key=lambda x: (x["timestamp"], x["user_id"]))
        if not earlier_u or not earlier_i:
            continue
        uh, ih = earlier_u[-n_user:], earlier_i[-n_item:] if n_item else []
        if len(uh) + len(ih) < min_history:
            continue
        out[(r["user_id"], r["item_id"])] = {
            "user_history": [x["item_id"] for x in uh], "item_history": [x["user_id"] for x in ih],
            "user_avg": sum(x["rating"] for x in earlier_u) / len(earlier_u),
            "item_avg": sum(x["rating"] for x in earlier_i) / len(earlier_i),
            "user_count": len(earlier_u), "item_count": len(earlier_i)}
    return out


@st.composite
def interaction_tables(draw):
    users = [f"u{i}" for i in range(draw(st.integers(1, 5)))]
    items = [f"i{i}" for i in range(draw(st.integers(1, 6)))]
    pairs = draw(st.lists(st.tuples(st.sampled_from(users), st.sampled_from(items)), min_size=1, max_size=25,
                          unique=True))
    return [{"user_id": u, "item_id": i, "rating": float(draw(st.integers(1, 5))),
             "timestamp": draw(st.integers(0, 6)), "review": f"{u} on {i}"} for u, i in pairs]


@settings(max_examples=150, deadline=None)
@given(interaction_tables(), st.integers(1, 4), st.integers(0, 3), st.integers(0, 4))
def test_matches_brute_force_and_never_leaks(rows, n_user, n_item, min_history):
    samples, stats = build_samples(pl.DataFrame(rows), n_user, n_item, min_history)
    expected = brute_force(rows, n_user, n_item, min_history)
    assert stats.kept == len(samples) == len(expected)
    assert stats.targets == len(rows) and stats.kept + sum(stats.dropped.values()) == len(rows)
    for s in samples.iter_rows(named=True):
        e = expected[(s["user_id"], s["item_id"])]
        assert [h["item_id"] for h in s["user_history"]] == e["user_history"]
        assert [h["user_id"] for h in s["item_history"]] == e["item_history"]
        assert abs(s["user_avg"] - e["user_avg"]) < 1e-9 and abs(s["item_avg"] - e["item_avg"]) < 1e-9
        assert (s["user_count"], s["item_count"]) == (e["user_count"], e["item_count"])
        for h in s["user_history"] + s["item_history"]:
            assert h["timestamp"] < s["timestamp"]  # strictly earlier, ties excluded


@settings(max_examples=60, deadline=None)
@given(interaction_tables(), st.integers(1, 3), st.integers(0, 3), st.integers(1, 4), st.booleans())
def test_blocks_of_targets_give_exactly_the_one_block_result(rows, n_user, n_item, block_rows, reviews):
    whole, stats = build_samples(pl.DataFrame(rows), n_user, n_item, 0, history_reviews=reviews)
    blocked, blocked_stats = build_samples(pl.DataFrame(rows), n_user, n_item, 0, history_reviews=reviews,
                                           block_rows=block_rows)
    assert blocked.equals(whole) and blocked.schema == whole.schema and blocked_stats == stats
    plan, _ = plan_samples(pl.DataFrame(rows), n_user, n_item, 0, history_reviews=reviews)
    sizes = [len(b) for b in plan.blocks(block_rows=block_rows)]
    assert sum(sizes) == len(whole) and max(sizes) <= block_rows  # only one block's lists at a time
    # a block of any targets (here: reversed) gets the same lists as in the whole build
    assert plan.samples(plan.targets.reverse()).equals(whole.reverse())


def test_hand_worked_example():
    rows = pl.DataFrame({
        "user_id": ["a", "a", "a", "b", "b", "c", "a"],
        "item_id": ["x", "y", "z", "x", "y", "y", "w"],
        "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 4.0, 2.0],
        "timestamp": [1, 2, 2, 3, 4, 5, 6],
    })
    samples, stats = build_samples(rows, history_user=2, history_item=2, min_history=0)
    got = {(r["user_id"], r["item_id"]): r for r in samples.iter_rows(named=True)}
    assert set(got) == {("b", "y")}  # every other target lacks user or item history
    by = got[("b", "y")]
    assert [h["item_id"] for h in by["user_history"]] == ["x"] and by["user_avg"] == 2.0
    assert [h["user_id"] for h in by["item_history"]] == ["a"] and by["item_avg"] == 4.0
    # no user history: a-x, b-x, c-y; no item history: a-y, a-z (y, z first rated at t=2), a-w
    assert stats.dropped == {"no_user_history": 3, "no_item_history": 3, "history_below_min": 0}


def test_missing_review_and_column_check():
    rows = pl.DataFrame({"user_id": [1, 2, 2], "item_id": [7, 8, 7], "rating": [3, 4, 5], "timestamp": [1, 2, 3]})
    samples, _ = build_samples(rows, 3, 3, 0)
    assert len(samples) == 1 and samples["user_id"].dtype == pl.Utf8
    only = samples.row(0, named=True)
    assert (only["user_id"], only["item_id"]) == ("2", "7")
    assert only["user_history"] == [{"item_id": "8", "rating": 4.0, "timestamp": 2, "review": ""}]
    import pytest
    with pytest.raises(ValueError, match="lacks column"):
        build_samples(rows.drop("timestamp"))


def test_leave_last_out_split_is_per_user_and_disjoint():
    # d rates every item first, so that a, b and c (later) have item histories
    rows = [{"user_id": u, "item_id": f"i{k}", "rating": 3.0, "timestamp": 20 * n + k}
            for n, u in enumerate("dabc") for k in range(8)]
    samples, _ = build_samples(pl.DataFrame(rows), 3, 3, 0)
    sp = split_leave_last_out(samples)
    for name in ("valid", "test"):
        assert sorted(sp[name]["user_id"].to_list()) == ["a", "b", "c"]
    last = {u: max(r["timestamp"] for r in rows if r["user_id"] == u) for u in "dabc"}
    assert all(r["timestamp"] == last[r["user_id"]] for r in sp["test"].iter_rows(named=True))
    keys = [set(zip(f["user_id"], f["item_id"])) for f in sp.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(len(f) for f in sp.values()) == len(samples)
