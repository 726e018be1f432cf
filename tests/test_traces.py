"""RecOne's cold-start traces: the keep / rationalise / reject rule, a real OpenAI client against
real HTTP servers (one of the test's own with chosen answers, and `transformers serve`), resume,
key handling, the local teacher, `validate`, and SFT on traces inside kit.train."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kit.traces import (REVEAL_MARKER, check_trace, judge, main, rating_step, revealed, training_asks)
from tests.test_train import kit_train

SECRET = "sk-kit-test-5ecret-0123456789"


def answer(rating, note: str = "likes twisty mysteries") -> str:
    return (f"<analyze user>The user {note}.</analyze user>\n<analyze item>[pos] a mystery\n[neg] long</analyze item>\n"
            f"<match>It fits what they liked.</match>\n<rate>{rating}</rate>")


def test_the_rule_keeps_only_well_formed_answers_with_the_true_rating():
    scale = (1.0, 5.0)
    assert rating_step([1, 2, 5]) == 1.0 and rating_step([1.5, 2, 4.5]) == 0.5 and rating_step([3.3]) is None
    assert judge(answer(4), 4.0, scale, "reczero", 1.0) == "ok"
    assert judge(answer("4.2"), 4.0, scale, "reczero", 1.0) == "ok"  # rounded as the data are
    assert judge(answer("4.2"), 4.0, scale, "reczero", None) == "wrong_rating"
    assert judge(answer(3), 4.0, scale, "reczero", 1.0) == "wrong_rating"
    assert judge(answer(4) + "<rate>4</rate>", 4.0, scale, "reczero", 1.0) == "malformed"
    assert judge(answer(6), 5.0, scale, "reczero", 1.0) == "malformed"  # outside the scale
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "history ..."}]
    hinted = revealed(messages, 4.0, "reczero")
    assert REVEAL_MARKER in hinted[-1]["content"] and "<rate>4</rate>" in hinted[-1]["content"]
    assert messages[-1]["content"] == "history ..."  # the student's prompt is not touched
    good = {"prompt": messages, "completion": answer(4), "rating": 4, "source": "teacher"}
    assert check_trace(good, scale, "reczero", 1.0) == []
    assert "revealed rating" in check_trace({**good, "prompt": hinted}, scale, "reczero", 1.0)[0]
    assert "true rating is 2" in check_trace({**good, "rating": 2}, scale, "reczero", 1.0)[0]
    assert "format rule" in check_trace({**good, "completion": "4"}, scale, "reczero", 1.0)[0]
    assert "source" in check_trace({**good, "source": "gpt"}, scale, "reczero", 1.0)[0]
    assert "rating" in check_trace({**good, "rating": None}, scale, "reczero", 1.0)[0]


# --------------------------------------------------------------------------- a scripted teacher

class ScriptedTeacher:
    """An OpenAI-compatible /v1/chat/completions of the test's own. Prompt i (in the order
    kit.traces asks them) is answered by plan[i % 4]: right; wrong, then right once the rating is
    revealed; malformed, then wrong; a 500, then a 429, then right."""

    def __init__(self, truths: dict[str, float], broken: bool = False):
        self.truths, self.broken = truths, broken
        self.order = {content: i for i, content in enumerate(truths)}
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = teacher.respond(self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "20")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def respond(self, path: str, headers, body: dict) -> tuple[int, dict]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}
        user = body["messages"][-1]["content"]
        hinted = REVEAL_MARKER in user
        content = user.split("\n\n" + REVEAL_MARKER)[0]
        truth = self.truths[content]
        with self.lock:
            self.requests.append({"path": path, "auth": headers.get("Authorization"), "hinted": hinted,
                                  "prompt": self.order[content]})
            tries = self.seen[content] = self.seen.get(content, 0) + 1
        if self.broken:
            return 500, {"error": {"message": "the teacher is down", "type": "server_error"}}
        kind = self.order[content] % 4
        wrong = truth - 1 if truth > 1 else truth + 1
        if kind == 0:
            text = answer(int(truth)) + "\nHope this helps!"  # after the answer: allowed, not stored
        elif kind == 1:
            text = answer(int(truth)) if hinted else answer(int(wrong))
        elif kind == 2:
            text = answer(int(wrong)) if hinted else "I think the user would rate it 4."
        else:
            if tries == 1:
                return 500, {"error": {"message": "overloaded", "type": "server_error"}}
            if tries == 2:
                return 429, {"error": {"message": "slow down", "type": "rate_limit"}}
            text = answer(int(truth))
        return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}]}

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def smoke(tiny_model_dir):
    import kit.runtime  # noqa: F401
    from transformers import AutoTokenizer

    from kit.config import load_config
    from kit.data import load_task_data

    cfg = load_config("smoke", [f"model.name={tiny_model_dir}"])
    data = load_task_data(cfg)
    asks, _ = training_asks(cfg, data, AutoTokenizer.from_pretrained(str(tiny_model_dir)), 6)
    return cfg, data, asks


def _cli(tiny_model_dir, out: Path, url: str, *extra: str) -> list[str]:
    return ["--config", "smoke", "--out", str(out), "--teacher", "openai", "--base-url", url,
            "--model", "teacher-x", "--concurrency", "3", *extra, f"model.name={tiny_model_dir}"]


def test_an_openai_teacher_is_kept_rationalised_rejected_retried_and_resumed(smoke, tiny_model_dir, tmp_path,
                                                                            monkeypatch, capsys):
    cfg, data, asks = smoke
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    teacher = ScriptedTeacher({a.messages[-1]["content"]: a.rating for a in asks})
    out = tmp_path / "t" / "traces.jsonl"
    try:
        assert main(_cli(tiny_model_dir, out, teacher.url, "--limit", "4")) == 0
        first = capsys.readouterr()
        summary = json.loads((tmp_path / "t" / "traces.summary.json").read_text())
        assert (summary["asked"], summary["kept"], summary["rationalised"], summary["rejected"]) == (4, 2, 1, 1)
        assert summary["answers"] == 6  # four first answers, two rationalisations
        assert summary["answers_rejected"] == {"malformed": 1, "wrong_rating": 2, "error": 0}
        firsts = summary["teacher_first_answers"]
        assert (firsts["n"], firsts["valid"], firsts["exact"]) == (4, 3, 2)
        assert firsts["mae"] == pytest.approx(1 / 3, abs=1e-3)
        traces = [json.loads(x) for x in out.read_text().splitlines()]
        assert sorted(t["source"] for t in traces) == ["rationalised", "teacher", "teacher"]
        for t in traces:
            ask = next(a for a in asks if (a.user_id, a.item_id) == (t["user_id"], t["item_id"]))
            assert t["prompt"] == ask.messages and t["rating"] == ask.rating  # the student's prompt, the truth
            assert REVEAL_MARKER not in json.dumps(t["prompt"])
            assert check_trace(t, data.scale, "reczero", 1.0) == []
            assert t["completion"].endswith("</rate>") and "Hope this helps" not in t["completion"]
        # the 500 and the 429 were retried (three requests for prompt 3); only the misses were re-asked
        assert [r["prompt"] for r in teacher.requests].count(3) == 3
        assert sorted(r["prompt"] for r in teacher.requests if r["hinted"]) == [1, 2]
        assert {r["auth"] for r in teacher.requests} == {f"Bearer {SECRET}"}
        assert all(r["path"] == "/v1/chat/completions" for r in teacher.requests)
        assert "3 traces kept of 4 prompts asked: 2 right at first, 1 rationalised, 1 rejected" in first.out

        # resume with a larger limit: only the two new prompts are asked
        n = len(teacher.requests)
        assert main(_cli(tiny_model_dir, out, teacher.url, "--limit", "6")) == 0
        again = capsys.readouterr()
        assert "resuming: 4 of 6 prompts already answered" in again.out
        assert sorted(r["prompt"] for r in teacher.requests[n:]) == [4, 5, 5]  # 5: wrong, then rationalised
        traces = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(traces) == 5 and len({(t["user_id"], t["item_id"]) for t in traces}) == 5
        summary = json.loads((tmp_path / "t" / "traces.summary.json").read_text())
        assert (summary["asked"], summary["traces"]) == (6, 5)
        # the key went to the server and nowhere else
        for path in (tmp_path / "t").iterdir():
            assert SECRET not in path.read_text(), path
        assert SECRET not in first.out + first.err + again.out + again.err
        assert summary["settings"]["base_url"] == teacher.url and "api_key" not in json.dumps(summary)
    finally:
        teacher.close()


def test_a_teacher_that_fails_stops_with_the_work_kept_and_a_rerun_retries(smoke, tiny_model_dir, tmp_path,
                                                                          monkeypatch, capsys):
    cfg, data, asks = smoke
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    truths = {a.messages[-1]["content"]: a.rating for a in asks}
    out = tmp_path / "traces.jsonl"
    down = ScriptedTeacher(truths, broken=True)
    try:
        code = main(_cli(tiny_model_dir, out, down.url, "--limit", "2", "--retries", "1"))
    finally:
        down.close()
    err = capsys.readouterr().err
    assert code == 2 and "every request of the last 2 prompts failed" in err and "rerun the same command" in err
    assert len(down.requests) == 4  # two prompts, each tried twice (one retry of the 500)
    assert {r["auth"] for r in down.requests} == {"Bearer none"}
    ledger = [json.loads(x) for x in (tmp_path / "traces.asked.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in ledger] == ["error", "error"]
    up = ScriptedTeacher(truths)
    try:
        assert main(_cli(tiny_model_dir, out, up.url, "--limit", "2")) == 0
    finally:
        up.close()
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert (summary["asked"], summary["unanswered"], summary["kept"], summary["rationalised"]) == (2, 0, 1, 1)


def test_bad_teacher_settings_get_one_line(smoke, tiny_model_dir, tmp_path, monkeypatch, capsys):
    teacher = ScriptedTeacher({})
    try:
        # no /v1: the client posts to /chat/completions, which this server does not know
        code = main(_cli(tiny_model_dir, tmp_path / "x.jsonl", teacher.url.removesuffix("/v1") + "/nope", "--limit", "1"))
    finally:
        teacher.close()
    assert code == 2 and "not found (404): the base URL usually ends in /v1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", "smoke", "--out", str(tmp_path / "y.jsonl"), "--teacher", "openai"])
    assert "--base-url URL and --model NAME" in capsys.readouterr().err


# --------------------------------------------------------------------------- real servers and models

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transformers_serve_is_a_teacher(smoke, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`transformers serve` on the tiny model, asked through the kit's OpenAI client: its random
    answers come back and are judged (all malformed), none is an error and none is kept."""
    port = _free_port()
    exe = Path(sys.executable).with_name("transformers")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    server = subprocess.Popen([str(exe), "serve", str(tiny_model_dir), "--port", str(port), "--host", "127.0.0.1",
                               "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        out = tmp_path / "served.jsonl"
        args = ["--config", "smoke", "--out", str(out), "--teacher", "openai", "--base-url",
                f"http://127.0.0.1:{port}/v1", "--model", str(tiny_model_dir), "--limit", "2", "--max-tokens", "12",
                f"model.name={tiny_model_dir}"]
        assert main(args) == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary = json.loads((tmp_path / "served.summary.json").read_text())
    assert (summary["asked"], summary["rejected"], summary["traces"], summary["unanswered"]) == (2, 2, 0, 0)
    assert summary["answers_rejected"] == {"malformed": 4, "wrong_rating": 0, "error": 0}
    assert not out.exists() or not out.read_text().strip()


def test_the_local_teacher_samples_k_answers_and_rationalises_the_misses(smoke, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "self.jsonl"
    args = ["--config", "smoke", "--out", str(out), "--teacher", "local", "--limit", "2", "--samples", "2",
            "--max-tokens", "8", f"model.name={tiny_model_dir}"]
    assert main(args) == 0
    ledger = [json.loads(x) for x in (tmp_path / "self.asked.jsonl").read_text().splitlines()]
    assert [[a["stage"] for a in r["answers"]] for r in ledger] == [["first", "first", "rationalised"]] * 2
    assert all(a["reason"] == "malformed" for r in ledger for a in r["answers"])  # random weights
    assert json.loads((tmp_path / "self.summary.json").read_text())["settings"]["teacher"] == "local"
    assert main(args) == 0  # a rerun asks nothing again
    assert "resuming: 2 of 2" in capsys.readouterr().out
    assert len((tmp_path / "self.asked.jsonl").read_text().splitlines()) == 2


# --------------------------------------------------------------------------- traces a user has

def _reference_traces(cfg, data, asks) -> list[dict]:
    """Traces from the synthetic catalog's reference answers, where they state the true rating."""
    rows = {(r["user_id"], r["item_id"]): r for r in data.splits["train"].iter_rows(named=True)}
    out = []
    for a in asks:
        text = data.catalog.reference_answer(rows[(a.user_id, a.item_id)], cfg.data.review_chars)
        if judge(text, a.rating, data.scale, "reczero", 1.0) == "ok":
            out.append({"prompt": a.messages, "completion": text, "rating": a.rating, "user_id": a.user_id,
                        "item_id": a.item_id, "source": "teacher"})
    return out


def test_validate_reports_every_bad_line_by_number(smoke, tmp_path, capsys):
    cfg, data, asks = smoke
    good = _reference_traces(cfg, data, asks)[0]
    lines = [json.dumps(good), json.dumps({**good, "prompt": revealed(good["prompt"], good["rating"], "reczero")}),
             json.dumps({**good, "rating": 1.0 if good["rating"] != 1 else 2.0}), "{not json", "",
             json.dumps({**good, "completion": [{"role": "assistant", "content": good["completion"]}]})]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: prompt: holds the revealed rating" in out
    assert f"{path}:3: completion: states" in out and f"{path}:4: not JSON" in out
    assert f"{path}:1:" not in out and f"{path}:6:" not in out
    assert "2 good, 3 bad lines" in out
    path.write_text(lines[0] + "\n")
    assert main(["validate", str(path), "--scale", "1,5"]) == 0


def test_recone_sft_on_traces_then_grpo_in_one_run_and_resume_across_the_boundary(smoke, tiny_model_dir, tmp_path):
    cfg, data, _ = smoke
    from transformers import AutoTokenizer

    asks, _ = training_asks(cfg, data, AutoTokenizer.from_pretrained(str(tiny_model_dir)), None)
    traces = _reference_traces(cfg, data, asks)[:6]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))
    bad = tmp_path / "bad.jsonl"
    leaked = {**traces[2], "prompt": revealed(traces[2]["prompt"], traces[2]["rating"], "reczero")}
    bad.write_text("".join(json.dumps(t) + "\n" for t in [traces[0], traces[1], leaked]))

    out = tmp_path / "recone"
    common = ["--config", "smoke", f"output_dir={out}", "grpo.save_steps=1", "evaluation.samples=4",
              "priming.epochs=2"]
    checked = kit_train([*common, f"priming.traces={path}", "--validate"], tiny_model_dir)
    assert "priming 4 SFT steps on 6 traces" in checked.stdout
    missing = kit_train([*common, f"priming.traces={tmp_path / 'none.jsonl'}", "--validate"], tiny_model_dir,
                        check=False)
    assert missing.returncode == 2 and "make traces with python -m kit.traces" in missing.stderr
    refused = kit_train([*common, f"priming.traces={bad}"], tiny_model_dir, check=False)
    assert refused.returncode == 2 and f"{bad}:3: prompt: holds the revealed rating" in refused.stderr
    assert not (out / "priming").exists()  # stopped before any training

    first = kit_train([*common, f"priming.traces={path}", "grpo.max_steps=2"], tiny_model_dir)
    assert "priming on 6 traces" in first.stdout and "| after SFT |" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["priming"]["samples"] == 6 and summary["priming"]["steps"] == 4  # 2 batches of 4, 2 epochs
    assert {"eval_before", "eval_primed", "eval_after"} <= set(summary)
    again = kit_train([*common, f"priming.traces={path}", "grpo.max_steps=3", "--resume"], tiny_model_dir)
    assert "format priming already done with these settings" in again.stdout
    assert "GRPO resumes from checkpoint-2" in again.stdout
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["phase"] == "grpo" and "reward" in m] == [1, 2, 3]
    assert sum(m["phase"] == "priming" and "loss" in m for m in metrics) >= 1
