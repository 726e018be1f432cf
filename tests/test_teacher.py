"""The synthetic teacher: it quotes only tastes the reviews state, decides each target aspect
locally, and its rating follows from its own arithmetic; rejection keeps only right answers."""
from __future__ import annotations

import pytest

from kit.config import load_config
from kit.data import load_task_data, sample_messages, select_references
from kit.data.teacher import NOT_STATED, stated_tastes
from kit.grounding import grounding_summary, prompt_text
from kit.rewards import is_consistent, match_result, parse_answer, round_rating

REVIEWS = ["Really enjoyed this one. I always enjoy a good mystery read. Loved that it was twisty and dark.",
           "Not really for me. Horror is rarely my thing. Too lengthy for my taste.",
           "It was okay overall. Readable enough."]


def test_stated_tastes_are_read_from_the_four_review_forms():
    found = [(t.aspect, t.polarity) for t in stated_tastes(REVIEWS)]
    assert found == [("mystery", 1), ("twisty", 1), ("dark", 1), ("horror", -1), ("lengthy", -1)]
    assert stated_tastes(REVIEWS)[4].quote == "Too lengthy for my taste."


@pytest.fixture(scope="module")
def demo_data():
    cfg = load_config("cpu-demo", ["data.history_user=10", "data.review_chars=400", "prompt.template=compact"])
    return cfg, load_task_data(cfg)


def test_every_answer_rates_what_its_match_arrives_at(demo_data):
    cfg, data = demo_data
    seen_steps = set()
    for row in data.splits["train"].head(300).iter_rows(named=True):
        reasoned = data.catalog.reasoned(row, cfg.data.review_chars)
        parsed = parse_answer(reasoned.text, data.scale)
        assert parsed.valid, parsed.problems
        assert is_consistent(parsed, data.scale)
        total = float(parsed.sections["match"].rsplit("=", 1)[1].split(",")[0])
        assert parsed.rating == reasoned.rating == match_result(parsed) == round_rating(total, data.scale)
        # the running sum is the readers' average shown plus the steps the aspect lines state
        steps = [float(x.split()[-1]) for x in parsed.sections["analyze item"].splitlines() if NOT_STATED not in x]
        assert total == pytest.approx(round(row["item_avg"], 1) + sum(steps))
        seen_steps.update(steps)
    assert seen_steps == {0.5, -1.0}


def test_answers_quote_only_what_the_users_reviews_state(demo_data):
    cfg, data = demo_data
    claims = quotes = 0
    for row in data.splits["train"].head(200).iter_rows(named=True):
        reasoned = data.catalog.reasoned(row, cfg.data.review_chars)
        shown = prompt_text(sample_messages(row, data, cfg))
        g = grounding_summary(reasoned.text, shown)
        assert g["share"] in (None, 1.0), g["unsupported"]
        tastes = data.catalog.tastes[row["user_id"]]
        truly = {x.lower() for x in [*tastes.liked_genres, *tastes.liked_traits]}
        truly_not = {x.lower() for x in [tastes.disliked_genre, *tastes.disliked_traits]}
        for aspect, said in reasoned.verdicts:
            if said is not None:  # a stated taste is the user's real taste, with its real sign
                assert aspect.lower() in (truly if said.polarity > 0 else truly_not)
                assert f'"{said.quote}"' in reasoned.text and said.quote in shown
                quotes += 1
        claims += g["claims"]
    assert quotes > 50 and claims > quotes


def test_rejection_keeps_only_answers_that_state_the_truth(demo_data):
    cfg, data = demo_data
    kept = select_references(data, 40, "correct", cfg.data.review_chars, seed=1)
    assert kept.kept == len(kept.frame) == 40 and kept.drawn > 40  # some were rejected on the way
    for row in kept.frame.iter_rows(named=True):
        assert data.catalog.reasoned(row, cfg.data.review_chars).rating == row["rating"]
    everything = select_references(data, 40, "all", cfg.data.review_chars, seed=1)
    assert everything.drawn == everything.kept == 40
    wrong = [r for r in everything.frame.iter_rows(named=True)
             if data.catalog.reasoned(r, cfg.data.review_chars).rating != r["rating"]]
    assert wrong  # "all" keeps the misses too
