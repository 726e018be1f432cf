"""A user reward living in an importable module (loaded as tests.reward_plugin:digit_count)."""


def digit_count(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in str(c))) for c in completions]
