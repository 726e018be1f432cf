"""A user reward living in an importable module (loaded as tests.reward_plugin:digit_count)."""


def digit_count(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in str(c))) for c in completions]


def distinct_chars(completions, **kwargs):
    """Varies between random completions, so GRPO always has a reward spread to learn from."""
    return [len(set(str(c))) / 10.0 for c in completions]


def distinct_chars_for_even_users(completions, user_id=None, **kwargs):
    """distinct_chars for users with an even number, a constant for the others: a batch of two
    prompts then often holds one group that can teach and one that cannot."""
    spread = distinct_chars(completions)
    if user_id is None:
        return spread
    return [s if int(str(u)[1:]) % 2 == 0 else 0.5 for s, u in zip(spread, user_id)]
