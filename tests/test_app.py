"""The Gradio app: its functions directly, the launched server through gradio_client, and a
real headless Chromium that selects a pair, generates, and sees the four panels."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.test_evaluate import smoke_run  # noqa: F401  (module fixture: a trained tiny run)

GOOD = ("<analyze user>Enjoys mysteries.</analyze user><analyze item>Mystery, dark.\n[pos] Mystery\n[neg] dark"
        "</analyze item><match>Mixed.</match><rate>4</rate>")


@pytest.fixture(scope="module")
def state(smoke_run, tiny_model_dir):  # noqa: F811
    os.environ["KIT_CACHE"] = str(tiny_model_dir.parent)
    from kit.app import build_state

    return build_state(run=str(smoke_run), overrides=[f"model.name={tiny_model_dir}"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(state):
    from kit.app import launch

    port = _free_port()
    demo = launch(state, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", demo
    demo.close()


def test_views_and_validation(state):
    from kit.app import (AppInputError, get_sample, history_table, item_choices, parse_item_choice,
                         user_choices)

    users = user_choices(state)
    assert users and user_choices(state, users[0].lower()[-3:]) and user_choices(state, "zzz-nobody") == []
    choices = item_choices(state, users[0])
    assert choices[0].split(" | ")[1] == "test"  # the user's test target first
    sample = get_sample(state, users[0], parse_item_choice(choices[0]))
    table = history_table(state, sample)
    assert len(table) == len(sample["user_history"]) and table.columns == ["item", "rating", "review", "date"]
    assert all(h["timestamp"] < sample["timestamp"] for h in sample["user_history"])
    for bad_user, bad_item in (("nobody", "B00001"), (users[0], "NOPE"), ("<script>", "x" * 10_000)):
        with pytest.raises(AppInputError) as err:
            get_sample(state, bad_user, bad_item)
        assert len(str(err.value)) < 200 and "\n" not in str(err.value)


def test_any_item_for_a_user(state):
    from kit.app import AppInputError, answer_panels, get_sample, truth_markdown, user_choices

    user = user_choices(state)[0]
    rated = set(state.data.interactions.filter(state.data.interactions["user_id"] == user)["item_id"])
    unrated = next(i for i in sorted(state.data.items) if i not in rated)
    sample = get_sample(state, user, unrated)
    assert sample["rating"] is None and "unknown" in truth_markdown(sample)
    mine = state.data.interactions.filter(state.data.interactions["user_id"] == user).sort("timestamp")
    n = state.cfg.data.history_user
    assert [h["item_id"] for h in sample["user_history"]] == mine["item_id"].to_list()[-n:]  # as of now
    assert sample["user_avg"] == mine["rating"].mean()
    assert "predicted (no true rating)" in answer_panels(GOOD, sample, (1, 5), state.rewards)["rating"]
    assert "| rating | 1 | +0.000 |" in answer_panels(GOOD, sample, (1, 5), state.rewards)["rewards"]
    # an item the user rated but which is not one of their targets: the truth is shown
    first = mine.row(1, named=True)
    rated_sample = get_sample(state, user, first["item_id"])
    assert rated_sample["rating"] == first["rating"]
    assert all(h["timestamp"] < first["timestamp"] for h in rated_sample["user_history"])
    with pytest.raises(AppInputError, match="no earlier ratings"):
        get_sample(state, user, mine.row(0, named=True)["item_id"])  # the user's very first rating


def test_answer_panels_valid_and_malformed(state):
    from kit.app import answer_panels

    sample = {"rating": 4.0, "user_avg": 3.0, "item_avg": 3.5}
    ok = answer_panels(GOOD, sample, (1, 5), state.rewards)
    assert ok["valid"] == "yes" and "kit-rating'>4<" in ok["rating"] and "error 0.00" in ok["rating"]
    assert "- Mystery" in ok["item"] and "- dark" in ok["item"] and ok["user"] == "Enjoys mysteries."
    assert "| format | 1 | +1.000 |" in ok["rewards"] and "| rating | 1 | +1.000 |" in ok["rewards"]
    bad = answer_panels(GOOD.replace("<rate>4</rate>", "<rate>9</rate><script>x</script>"), sample, (1, 5),
                        state.rewards)
    assert bad["valid"] == "no" and "malformed" in bad["rating"] and "outside the scale" in bad["rating"]
    assert "<script>" not in bad["rating"] + bad["user"] + bad["item"]
    assert "| format | 1 | -1.000 |" in bad["rewards"] and "| rating | 1 | +0.000 |" in bad["rewards"]


def test_streaming_and_base_vs_adapter(state):
    from kit.app import get_sample, item_choices, parse_item_choice, rating_spread, stream_answer, user_choices

    user = user_choices(state)[0]
    sample = get_sample(state, user, parse_item_choice(item_choices(state, user)[0]))
    steps = list(stream_answer(state, sample, True, 0.0, 6, 0))
    assert steps and all(b.startswith(a) for a, b in zip(steps, steps[1:]))  # text only grows
    spread = rating_spread(state, sample, 3, False, 0.9, 6, 0)
    assert len(spread["ratings"]) == 3 and spread["spread"] >= 0


def test_server_through_gradio_client(server, state):
    from gradio_client import Client

    from kit.app import item_choices, user_choices

    url, demo = server
    assert demo.server_name == "127.0.0.1" and not demo.share
    client = Client(url, verbose=False)
    user = user_choices(state)[0]
    out = client.predict(user, item_choices(state, user)[0], 0.0, 8, 0, 1, api_name="/generate")
    assert out[0] == "done" and "<|im_start|>system" in out[1]
    assert len(out) == 2 + 2 * 7  # message, prompt, then 7 fields for the tuned and the base side
    assert "| format |" in out[2 + 4] and "| format |" in out[2 + 7 + 4]
    unknown = client.predict("nobody", "B00001 | test | x", 0.0, 8, 0, 1, api_name="/generate")
    assert "unknown user id" in unknown[0]


def test_console_names_the_kits_share_flag(state, capsys):
    from kit.app import launch

    port = _free_port()
    demo = launch(state, port=port, block=False)
    try:
        out = capsys.readouterr().out
    finally:
        demo.close()
    assert f"kit: app at http://127.0.0.1:{port}/ (this machine only; add --share" in out
    assert "share=True" not in out  # Gradio's own hint names its Python argument, not the flag


VALUE = "(id => (document.querySelector(id + ' input') || {value: ''}).value)"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian chromium not installed")
def test_browser_selects_generates_and_shows_panels(server, state, tmp_path):
    from playwright.sync_api import sync_playwright

    from kit.app import user_choices

    assert CHROMIUM, "CI must install Debian's chromium (see .ci/run)"
    url, _ = server
    user = user_choices(state)[1]  # not the preselected first user: the test really selects
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(url)
        page.wait_for_function(f"{VALUE}('#item-select').includes('| test |')",
                               timeout=60_000)  # the preselected user's items are filled on load
        box = page.locator("#user-select input")
        box.click()
        box.fill(user)
        page.get_by_role("option", name=user, exact=True).click()
        page.wait_for_function(f"{VALUE}('#item-select').includes('| test |') && {VALUE}('#user-select') == '{user}'",
                               timeout=30_000)
        page.wait_for_selector("#truth >> text=True rating")
        page.locator("#generate").click()
        page.wait_for_selector("#message >> text=done", timeout=120_000)
        for side in ("tuned", "base"):
            for panel in ("rating", "user", "item", "match", "rewards"):
                assert page.locator(f"#{side}-{panel}").count() == 1
            assert page.locator(f"#{side}-rating .kit-rating").inner_text() != ""
            assert "format" in page.locator(f"#{side}-rewards").inner_text()
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.read_bytes()[:4] == b"\x89PNG"
    keep = os.environ.get("KIT_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "app-test.png")


def test_the_app_shows_exactly_the_recipes_rewards_weights_and_total(smoke_run, tiny_model_dir):
    from kit.app import answer_panels, build_state

    state = build_state(run=str(smoke_run), overrides=[
        f"model.name={tiny_model_dir}",
        "rewards=[{name: exact_match, weight: 0.5, kwargs: {hit: 3.0, miss: -2.0}}, {name: format, weight: 2}]"])
    table = answer_panels(GOOD, {"rating": 4.0}, (1, 5), state.rewards)["rewards"]
    rows = [x for x in table.splitlines() if x.startswith("| ") and not x.startswith("| reward")]
    assert rows == ["| exact_match | 0.5 | +3.000 |", "| format | 2 | +1.000 |", "| weighted total | | +3.500 |"]
    missed = answer_panels(GOOD, {"rating": 2.0}, (1, 5), state.rewards)["rewards"]
    assert "| exact_match | 0.5 | -2.000 |" in missed and "| weighted total | | +1.000 |" in missed
