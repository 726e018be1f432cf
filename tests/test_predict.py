"""kit.predict: any (user, item) pairs rated as of a moment, batched, resumable, with clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_train import _env

ARGS = ["--config", "smoke", "--adapter", "none", "evaluation.max_new_tokens=12", "evaluation.batch_size=3"]


def kit_predict(args, tiny_model_dir):
    return subprocess.run([sys.executable, "-m", "kit.predict", *args], cwd=REPO, env=_env(tiny_model_dir),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def interactions():
    from kit.config import load_config
    from kit.data import load_task_data

    return load_task_data(load_config("smoke")).interactions.sort("timestamp")


def test_pairs_are_rated_as_of_their_moment_and_a_rerun_resumes(tmp_path, tiny_model_dir, interactions):
    rated = interactions.row(len(interactions) - 1, named=True)  # the newest rating in the data
    user = rated["user_id"]
    mine = interactions.filter(interactions["user_id"] == user)
    middle = int(mine["timestamp"][len(mine) // 2])  # the user has earlier ratings, and later ones
    rated_before = interactions.filter(interactions["timestamp"] < middle)["item_id"].unique().sort().to_list()
    unrated = next(i for i in rated_before if i not in set(mine["item_id"].to_list()))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user_id,item_id,timestamp,note\n"
                     f"{user},{rated['item_id']},,rated: its own moment\n"
                     f"{user},{unrated},{middle},as of the middle of the data\n"
                     f"nobody,{unrated},,unknown user\n")
    out = tmp_path / "preds.jsonl"
    proc = kit_predict([*ARGS, "--pairs", str(pairs), "--out", str(out)], tiny_model_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kit: 3 pairs: 2 rated" in proc.stdout and "1 could not be rated" in proc.stdout
    first, second, third = [json.loads(line) for line in out.read_text().splitlines()]

    assert (first["as_of"], first["truth"]) == (rated["timestamp"], rated["rating"])
    assert (second["as_of"], second["truth"]) == (middle, None)
    for record in (first, second):  # averages over interactions strictly earlier than the moment only
        earlier = interactions.filter((interactions["user_id"] == user) & (interactions["timestamp"] < record["as_of"]))
        assert record["user_avg"] == pytest.approx(earlier["rating"].mean())
        assert isinstance(record["reasoning"], str) and record["valid"] is (record["prediction"] is not None)
    assert third["error"].startswith("unknown user 'nobody'") and third["prediction"] is None

    # one more pair: only it is rated; the three records stay as they were
    before = out.read_text()
    pairs.write_text(pairs.read_text() + f"{user},{unrated},2023-11-14,ISO date\n")
    proc = kit_predict([*ARGS, "--pairs", str(pairs), "--out", str(out)], tiny_model_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 4 pairs already rated" in proc.stderr
    assert out.read_text().startswith(before) and len(out.read_text().splitlines()) == 4
    assert json.loads(out.read_text().splitlines()[-1])["line"] == 5


@pytest.mark.parametrize("text, message", [
    ("user,item_id\nu1,i1\n", "pairs.csv:1: header lacks user_id (it has: user, item_id)"),
    ("user_id,item_id,timestamp\nu1,i1,1700000000\nu1,i2,yesterday\n",
     "pairs.csv:3: timestamp 'yesterday' is neither Unix seconds nor an ISO date"),
    ("user_id,item_id\nu1,\n", "pairs.csv:2: item_id is empty"),
])
def test_a_bad_pairs_file_stops_with_its_line(tmp_path, tiny_model_dir, text, message):
    (tmp_path / "pairs.csv").write_text(text)
    proc = kit_predict([*ARGS, "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "p.jsonl")],
                       tiny_model_dir)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "p.jsonl").exists()
