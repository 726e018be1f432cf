"""Grounded reasons: claims found in the prompt, by the documented matching rule; the reward,
evaluation and app use it."""
from __future__ import annotations

import pytest

from kit.grounding import check_claims, claims_of, grounding_summary, words

PROMPT = ("The user's history: 'The Salt Road' rated 5: slow-burn plot, vivid worldbuilding, a twist ending. "
          "'Iron Tide' rated 2: too much technical jargon.\nTarget item: 'Glass Orchard', Fantasy; "
          "readers mention lyrical prose and a twisting mystery.")
ANSWER = ("<analyze user>Enjoyed: slow-burn plots, vivid worldbuilding. Disliked: technical jargon. Average 3.5."
          "</analyze user>\n<analyze item>Fantasy, lyrical.\n[pos] lyrical prose, like their favourites\n"
          "[pos] twist endings; they rated one 5\n[neg] nothing they clearly disliked</analyze item>\n"
          "<match>2 for, 0 against.</match>\n<rate>4</rate>")


def test_the_matching_rule_normalises_words():
    assert words("The Twists, and a slow-burn PLOT!") == ["twist", "slow", "burn", "plot"]
    assert words("glass class") == ["glass", "class"]  # a double s is not a plural
    assert words("it was rated 5 stars") == []  # stop words and numbers claim nothing


def test_claims_are_item_aspects_and_user_preferences_not_empty_lines():
    found = claims_of(ANSWER)
    assert ("pos", "lyrical prose") in found and ("pos", "twist endings") in found
    assert ("user", "slow-burn plots") in found and ("user", "technical jargon") in found
    assert not any("nothing" in text for _, text in found)


def test_a_grounded_answer_is_fully_supported_and_a_fabricated_aspect_is_not():
    g = grounding_summary(ANSWER, PROMPT)
    assert g["share"] == 1.0 and g["claims"] == 5  # 3 user phrases ("Average 3.5" claims nothing) + 2 aspects
    invented = ANSWER.replace("[pos] twist endings", "[pos] dragon battles")
    bad = grounding_summary(invented, PROMPT)
    assert bad["supported"] == 4 and bad["unsupported"] == ["dragon battles"]
    partly = [c for c in check_claims(ANSWER.replace("lyrical prose", "lyrical battle prose"), PROMPT)
              if c.kind == "pos"]
    assert partly[0].supported  # 2 of 3 words found: the two-thirds rule holds
    assert grounding_summary("no tags at all", PROMPT) == {"supported": 0, "claims": 0, "share": None,
                                                          "unsupported": []}


def test_the_grounding_reward_drops_when_an_aspect_is_fabricated():
    from kit.rewards import REWARDS, check_reward

    reward = REWARDS["grounding"]
    check_reward(reward, "grounding")
    chat = [{"role": "system", "content": "rules"}, {"role": "user", "content": PROMPT}]
    invented = ANSWER.replace("[pos] twist endings", "[pos] dragon battles")
    honest, fabricated, empty, no_prompt = reward([ANSWER, invented, "<rate>4</rate>", ANSWER],
                                                  prompts=[chat, chat, chat, None])
    assert honest == 1.0 and fabricated == pytest.approx(4 / 5) and empty == 0.0 and no_prompt == 0.0


def test_reference_answers_of_the_synthetic_catalog_are_grounded():
    """The generator's answers only name what the prompt shows: every claim must be found."""
    from kit.config import load_config
    from kit.data import load_task_data, sample_messages
    from kit.grounding import prompt_text

    cfg = load_config("smoke")
    data = load_task_data(cfg)
    supported = claims = 0
    for row in data.splits["valid"].head(25).iter_rows(named=True):
        g = grounding_summary(data.catalog.reference_answer(row, cfg.data.review_chars),
                              prompt_text(sample_messages(row, data, cfg)))
        supported, claims = supported + g["supported"], claims + g["claims"]
    assert claims > 25 and supported == claims


def test_evaluation_totals_and_the_app_marks():
    from kit.app import answer_panels
    from kit.config import load_config
    from kit.evaluate import grounding_totals
    from kit.rewards import load_recipe_rewards

    records = [{"grounding": grounding_summary(ANSWER, PROMPT)},
               {"grounding": grounding_summary(ANSWER.replace("[pos] twist endings", "[pos] dragon battles"), PROMPT)},
               {"grounding": grounding_summary("malformed", PROMPT)}]
    t = grounding_totals(records)
    assert (t["supported"], t["claims"], t["answers_with_claims"], t["answers"]) == (9, 10, 2, 3)
    cfg = load_config("smoke", ["rewards=[{name: format}, {name: grounding, weight: 0.5}]"])
    rewards = load_recipe_rewards(cfg.rewards)
    panels = answer_panels(ANSWER.replace("[pos] twist endings", "[pos] dragon battles"), {"rating": 4.0}, (1, 5),
                           rewards, evidence=PROMPT)
    assert "lyrical prose, like their favourites ✓ _in the prompt_" in panels["item"]
    assert "dragon battles; they rated one 5 ✗ _not in the prompt_" in panels["item"]
    assert "Grounded: 4 of 5 claims" in panels["item"] and "| grounding | 0.5 | +0.800 |" in panels["rewards"]


LOCAL = ("<analyze user>Likes: twisty. Dislikes: dark.</analyze user>\n<analyze item>"
         '- Mystery: not in their reviews\n- dark: "Too dark for my taste." [neg] -1\n'
         '- twisty: "Loved that it was twisty." [pos] +0.5</analyze item>\n'
         "<match>readers 3.8; dark -1 = 2.8; twisty +0.5 = 3.3</match>\n<rate>3</rate>")
SHOWN = ("Category: Mystery. Features: dark, twisty, lengthy.\n1. rated 2: Not really for me. Too dark for my taste.\n"
         "2. rated 4: Really enjoyed this one. Loved that it was twisty.")


def test_quotes_must_be_verbatim_and_about_the_aspect_they_are_cited_for():
    assert claims_of(LOCAL) == [("neg", "dark"), ("quote", "Too dark for my taste."), ("pos", "twisty"),
                                ("quote", "Loved that it was twisty."), ("user", "twisty"), ("user", "dark")]
    assert grounding_summary(LOCAL, SHOWN)["share"] == 1.0
    invented = LOCAL.replace('"Too dark for my taste."', '"Too dark and grim for my taste."')
    assert grounding_summary(invented, SHOWN)["unsupported"] == ["Too dark and grim for my taste."]
    off_topic = LOCAL.replace('- twisty: "Loved that it was twisty."', '- lengthy: "Loved that it was twisty."')
    assert grounding_summary(off_topic, SHOWN)["unsupported"] == ["Loved that it was twisty."]
    # words of the quote occur in the prompt, but not the sentence: still unsupported
    shuffled = LOCAL.replace('"Too dark for my taste."', '"Too twisty for my taste."').replace("- dark:", "- twisty:")
    assert "Too twisty for my taste." in grounding_summary(shuffled, SHOWN)["unsupported"]
