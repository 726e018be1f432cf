"""CPU evaluation speed-ups that must not change what is measured: stop strings, length batching,
reuse of answers already made."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import kit.runtime  # noqa: F401
    from kit.config import load_config
    from kit.data import load_task_data
    from kit.model import load_adapter

    cfg = load_config("smoke", [f"model.name={tiny_model_dir}", "evaluation.batch_size=3",
                                "evaluation.max_new_tokens=10"])
    return cfg, load_task_data(cfg), load_adapter(cfg.model, None)


def test_a_sequence_stops_after_its_stop_string_while_its_batch_goes_on(tiny):
    from kit.model import generate
    from kit.prompts import render_chat

    cfg, data, loaded = tiny
    prompts = [render_chat(loaded.tokenizer, [{"role": "user", "content": text}])
               for text in ("Rate this book.", "Describe a long and winding road in detail, please.")]
    # sampled (seeded): the random model's greedy answers are blank lines
    free = generate(loaded, prompts, max_new_tokens=16, progress=False, temperature=1.0, seed=3)
    # a stop string that the first answer writes early (its second and third tokens), the second does not
    ids = loaded.tokenizer(free[0], add_special_tokens=False)["input_ids"]
    stop = loaded.tokenizer.decode(ids[1:3])
    assert stop.strip() and stop not in free[1]
    stopped = generate(loaded, prompts, max_new_tokens=16, progress=False, temperature=1.0, seed=3, stop=[stop])
    assert stopped[0].endswith(stop) and free[0].startswith(stopped[0]) and len(stopped[0]) < len(free[0])
    assert stopped[1] == free[1]  # its batch neighbour ran on, unchanged


def test_predict_returns_frame_order_and_reuses_known_answers(tiny):
    from kit.evaluate import _key, answer_end, predict

    cfg, data, loaded = tiny
    assert answer_end("reczero") == "</rate>" and answer_end("think_answer") == "</answer>"
    frame = data.split("test", 7, seed=1)
    first = frame.head(2).to_dicts()
    marker = "<analyze user>x</analyze user><analyze item>y</analyze item><match>z</match><rate>5</rate>"
    from kit.evaluate import parse_completions

    known = {_key(r): parse_completions(r, [marker], data, cfg.prompt.style) for r in first}
    seen: list[int] = []
    rows = predict(loaded, frame, data, cfg, known=known, progress=seen.append)
    assert [(r["user_id"], r["item_id"]) for r in rows] == list(zip(frame["user_id"], frame["item_id"]))
    assert [r["completion"] for r in rows[:2]] == [marker, marker]  # reused, not generated again
    assert rows[0]["valid"] and rows[0]["prediction"] == 5.0
    assert all(r["completion"] != marker for r in rows[2:])
    assert seen == [5, 7]  # two answered already; batches of 3 for the other five
