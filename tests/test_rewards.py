"""Rewards against the paper's rule, on hand-written answers."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.rewards import REWARDS, RewardError, load_reward, parse_answer, rating_score

GOOD = ("<analyze user>Likes mysteries.</analyze user>\n<analyze item>[pos] twisty\n[neg] long</analyze item>\n"
        "<match>Mostly fits.</match>\n<rate>4</rate>")
S5 = (1.0, 5.0)
SCALE = {"rating_min": 1.0, "rating_max": 5.0}  # the data's scale, as the dataset columns carry it


def rewards(text, truth=4.0, lo=1.0, hi=5.0, names=("format", "rating")):
    return [REWARDS[n]([text], rating=[truth], rating_min=[lo], rating_max=[hi])[0] for n in names]


def test_valid_answer_gets_paper_reward():
    fmt, rat = rewards(GOOD, truth=4.0)
    assert (fmt, rat) == (1.0, 1.0)
    assert rewards(GOOD, truth=2.0) == [1.0, 0.0]  # 1 - 2/2
    assert rewards(GOOD, truth=1.0)[1] == pytest.approx(-0.5)  # 1 - 3/2


def test_rating_reward_follows_the_scale():
    ten = GOOD.replace("<rate>4</rate>", "<rate>8.5</rate>")
    assert rewards(ten, truth=4.0)[0] == -1.0  # out of the 1-5 scale
    fmt, rat = rewards(ten, truth=4.0, lo=1, hi=10)
    assert fmt == 1.0
    assert rat == pytest.approx(1 - 4.5 / 4.5)
    assert rating_score(3, 5, (1, 5)) == 0.0


@pytest.mark.parametrize("broken,problem", [
    (GOOD.replace("<analyze user>", ""), "<analyze user> appears 0 times"),
    (GOOD.replace("</match>", "</match></match>"), "</match> appears 2 times"),
    (GOOD + "\n<rate>3</rate>", "<rate> appears 2 times"),
    (GOOD.replace("<rate>4</rate>", "<rate></rate>"), "<rate> must hold only a number"),
    (GOOD.replace("<rate>4</rate>", "<rate>four</rate>"), "<rate> must hold only a number"),
    (GOOD.replace("<rate>4</rate>", "<rate>4 stars</rate>"), "<rate> must hold only a number"),
    (GOOD.replace("<rate>4</rate>", "<rate>6</rate>"), "outside the scale"),
    (GOOD.replace("<rate>4</rate>", "<rate>0.5</rate>"), "outside the scale"),
    (GOOD.replace("<rate>4</rate>", "<rate>nan</rate>"), "<rate> must hold only a number"),
    (GOOD.replace("<match>Mostly fits.</match>", "<match>  </match>"), "<match> block is missing or empty"),
])
def test_each_way_of_being_malformed(broken, problem):
    parsed = parse_answer(broken, S5)
    assert not parsed.valid
    assert any(problem in p for p in parsed.problems), parsed.problems
    assert rewards(broken) == [-1.0, 0.0]  # never scored with the truth


def test_text_after_the_answer_is_valid_under_the_paper_rule_but_costs_partial_credit():
    parsed = parse_answer(GOOD + " trailing words", S5)
    assert parsed.valid and parsed.notes == ["text after </rate>"]
    assert rewards(GOOD + " trailing words") == [1.0, 1.0]
    assert REWARDS["graded_format"]([GOOD + " trailing words"], **SCALE)[0] < REWARDS["graded_format"]([GOOD], **SCALE)[0] == 1.0


def test_blocks_out_of_order():
    swapped = ("<analyze item>[pos] a</analyze item><analyze user>b</analyze user>"
               "<match>c</match><rate>4</rate>")
    parsed = parse_answer(swapped, S5)
    assert "<analyze user> block must close before <analyze item> opens" in parsed.problems
    assert rewards(swapped) == [-1.0, 0.0]


def test_prediction_is_last_rate_block_even_when_invalid():
    parsed = parse_answer(GOOD + "<rate>2</rate>", S5)
    assert parsed.rating == 2.0 and not parsed.valid


def test_both_completion_shapes():
    as_messages = [{"role": "assistant", "content": GOOD}]
    assert REWARDS["format"]([GOOD, as_messages], rating=[4, 4], **SCALE) == [1.0, 1.0]
    assert REWARDS["rating"]([as_messages], rating=[3], **SCALE) == [0.5]


def test_scale_defaults_to_one_to_five():
    assert REWARDS["format"]([GOOD.replace(">4<", ">5<")], **SCALE) == [1.0]
    assert REWARDS["format"]([GOOD.replace(">4<", ">7<")], **SCALE) == [-1.0]


def test_graded_format_gives_partial_credit():
    g = REWARDS["graded_format"]
    full = g([GOOD], **SCALE)[0]
    half = g(["<analyze user>x</analyze user><analyze item>y</analyze item>"], **SCALE)[0]
    none = g(["just prose"], **SCALE)[0]
    assert full == 1.0 and 0.0 < half < full and none == 0.0


def test_exact_match_and_think_answer_ablations():
    assert REWARDS["exact_match"]([GOOD, GOOD], rating=[4, 3], **SCALE) == [2.0, -1.5]
    ta = "<think>fits</think><answer>3</answer>"
    assert REWARDS["think_answer_format"]([ta, GOOD], **SCALE) == [1.0, -1.0]
    assert REWARDS["think_answer_rating"]([ta], rating=[4], **SCALE) == [0.5]
    assert REWARDS["answer_only_format"](["<answer>2</answer>", "2"], **SCALE) == [1.0, -1.0]


def test_huge_and_binary_input_do_not_raise():
    huge = "<rate>" * 200_000 + "x" * 1_000_000
    binary = bytes(range(256)) * 100
    for name, fn in REWARDS.items():
        out = fn([huge, binary, None, 12345, {"content": None}], rating=[4, 4, 4, 4, 4])
        assert len(out) == 5 and all(isinstance(v, float) and math.isfinite(v) for v in out), name


def test_bad_truth_or_scale_columns_do_not_raise():
    assert REWARDS["rating"]([GOOD], rating=["n/a"], **SCALE) == [0.0]
    assert REWARDS["rating"]([GOOD], rating=[4], rating_min=["x"], rating_max=[None]) == [0.0]  # no scale, no score


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(
    ["<analyze user>", "</analyze user>", "<analyze item>", "</analyze item>", "<match>", "</match>",
     "<rate>", "</rate>", "4", "-1e9", "[pos]", " ", "\x00", "3.5", "inf"])).map("".join)),
       st.floats(allow_nan=True, allow_infinity=True))
def test_rewards_never_raise(text, truth):
    for fn in REWARDS.values():
        out = fn([text, [{"role": "assistant", "content": text}]], rating=[truth, truth])
        assert len(out) == 2 and all(math.isfinite(v) for v in out)
    fmt = REWARDS["format"]([text], **SCALE)[0]
    rat = REWARDS["rating"]([text], rating=[3.0], **SCALE)[0]
    assert fmt in (1.0, -1.0)
    assert (fmt == -1.0 and rat == 0.0) or (fmt == 1.0 and -1.0 <= rat <= 1.0)


def test_user_reward_from_file_and_dotted_path(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text("def brevity(completions, **kwargs):\n    return [-len(str(c)) / 100 for c in completions]\n"
                 "def no_kwargs(completions):\n    return [0.0] * len(completions)\n"
                 "def crashes(completions, **kwargs):\n    raise KeyError('rating')\n")
    fn = load_reward(f"{f}:brevity")
    assert fn(["ab", "abcd"]) == [-0.02, -0.04]
    assert load_reward("format") is REWARDS["format"]
    assert load_reward("tests.reward_plugin:digit_count")(["a1b22"]) == [3.0]
    with pytest.raises(RewardError, match=r"\*\*kwargs"):
        load_reward(f"{f}:no_kwargs")
    with pytest.raises(RewardError, match="raised on a probe batch: KeyError"):
        load_reward(f"{f}:crashes")
    with pytest.raises(RewardError, match="has no attribute 'missing'"):
        load_reward(f"{f}:missing")
    with pytest.raises(RewardError, match="does not exist"):
        load_reward(f"{tmp_path}/nope.py:fn")
    with pytest.raises(RewardError, match="not a registered name"):
        load_reward("formatt")


def test_reward_kwargs_are_bound_and_checked_against_the_signature(tmp_path):
    from kit.config import load_config
    from kit.rewards import load_recipe_rewards, reward_breakdown

    strict = load_reward("exact_match", {"hit": 1.0, "miss": -0.25})
    assert strict([GOOD, GOOD], rating=[4, 3], **SCALE) == [1.0, -0.25]
    assert strict.__name__ == "exact_match"  # what TRL logs it as
    with pytest.raises(RewardError, match=r"^reward 'exact_match': unknown kwarg 'hits' \(did you mean 'hit'\?\)$"):
        load_reward("exact_match", {"hits": 1.0})
    with pytest.raises(RewardError, match="unknown kwarg 'rating'"):  # a dataset column is not a setting
        load_reward("exact_match", {"rating": 1.0})
    with pytest.raises(RewardError, match="unknown kwarg 'hit' \\(it takes no settings\\)"):
        load_reward("format", {"hit": 1.0})
    f = tmp_path / "scaled.py"
    f.write_text("def scaled(completions, factor=1.0, **kwargs):\n    return [factor * len(str(c)) for c in completions]\n")
    cfg = load_config("smoke", [f"rewards=[{{name: '{f}:scaled', weight: 0.5, kwargs: {{factor: 2}}}}, {{name: format}}]"])
    rewards = load_recipe_rewards(cfg.rewards)
    b = reward_breakdown(rewards, "abc", rating=[4.0], **SCALE)
    assert b == {"rewards": {"scaled": 6.0, "format": -1.0}, "weights": {"scaled": 0.5, "format": 1.0}, "total": 2.0}


def _answer(match: str, rate: str) -> str:
    return (f"<analyze user>Likes: dark.</analyze user><analyze item>- dark: liked</analyze item>"
            f"<match>{match}</match><rate>{rate}</rate>")


@pytest.mark.parametrize("match,rate,expected", [
    ("readers 3.8; dark +0.5 = 4.3", "4", True),       # rounded to a whole rating
    ("readers 3.4; dark +0.5 = 3.9", "3.9", True),     # or exactly as written
    ("readers 3.0; dark +0.5 = 3.5", "4", True),       # half up, not Python's half-to-even
    ("readers 4.8; dark +0.5 = 5.3", "5", True),       # kept inside the scale
    ("readers 0.8 = 0.8", "1", True),
    ("readers 3.8; dark +0.5 = 4.3", "3", False),      # the rating contradicts its own arithmetic
    ("two points for, one against", "4", None),        # the match states no number: nothing to agree with
])
def test_consistency_reads_what_the_match_arrives_at(match, rate, expected):
    from kit.rewards import is_consistent

    text = _answer(match, rate)
    assert is_consistent(parse_answer(text, (1, 5)), (1, 5)) is expected
    assert REWARDS["consistency"]([text], **SCALE) == [1.0 if expected else 0.0]


def test_a_malformed_answer_is_never_consistent():
    from kit.rewards import is_consistent

    broken = _answer("readers 3.8 = 3.8", "4").replace("</match>", "")
    assert is_consistent(parse_answer(broken, (1, 5)), (1, 5)) is None
    assert REWARDS["consistency"]([broken, "nothing"], **SCALE) == [0.0, 0.0]


def test_a_reward_called_without_the_scale_says_so_once(recwarn):
    """Someone's own TRL script passing only `rating`: the answers score the fallback, and the
    reward says why, once, naming the missing columns."""
    import kit.rewards as rewards

    rewards._WARNED_WITHOUT_SCALE.discard("consistency")
    answer = "<analyze user>a</analyze user><analyze item>b</analyze item><match>4</match><rate>4</rate>"
    assert rewards.REWARDS["consistency"]([answer], rating=[4.0]) == [0.0]
    assert rewards.REWARDS["consistency"]([answer], rating=[4.0]) == [0.0]
    said = [str(w.message) for w in recwarn if "kit.rewards.consistency" in str(w.message)]
    assert len(said) == 1 and "rating_min, rating_max" in said[0]
    assert rewards.REWARDS["consistency"]([answer], rating=[4.0], rating_min=[1.0], rating_max=[5.0]) == [1.0]
