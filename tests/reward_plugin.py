"""A user reward living in an importable module (loaded as tests.reward_plugin:digit_count)."""


def digit_count(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in str(c))) for c in completions]


def distinct_chars(completions, **kwargs):
    """Varies between random completions, so GRPO always has a reward spread to learn from."""
    return [len(set(str(c))) / 10.0 for c in completions]
