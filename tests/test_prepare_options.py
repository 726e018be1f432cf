"""Prepare options are defined once (kit.config.PrepareOptions): the CLI and recipes derive from it."""
from __future__ import annotations

import argparse
import json

import pytest

from kit.config import AutoPrepare, PrepareOptions, load_config
from kit.data.prepare import add_model_options, options_from_args, prepare_on_first_use
from kit.data.registry import REGISTRY
from kit.data.sources import DataError
from tests import data_fixtures as F


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_model_options(parser, PrepareOptions, choices={"source": list(REGISTRY)})
    return parser


def test_every_field_is_a_cli_option_with_the_same_default():
    parser = _parser()
    by_dest = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(by_dest) == set(PrepareOptions.model_fields)
    for name, info in PrepareOptions.model_fields.items():
        action = by_dest[name]
        assert action.required == info.is_required(), name
        if not info.is_required():
            assert action.default == info.default, name
        assert action.help.startswith(info.description), name
    assert by_dest["source"].choices == list(REGISTRY) and by_dest["split"].choices == ["loo", "time"]
    assert by_dest["mapping"].option_strings == ["--map"] and by_dest["items_path"].option_strings == ["--items"]
    args = parser.parse_args(["--source", "csv", "--path", "p", "--out", "o"])
    assert options_from_args(args) == PrepareOptions(source="csv", path="p", out="o")


def test_cli_text_is_parsed_by_the_model():
    args = _parser().parse_args(["--source", "csv", "--path", "p", "--out", "o", "--time-cut", "0.5,0.9",
                                 "--scale", "1,10", "--categories", "rock, latin", "--map", "user_id=who,rating=stars",
                                 "--strict", "--history", "3"])
    opts = options_from_args(args)
    assert opts.time_cut == (0.5, 0.9) and opts.scale == (1.0, 10.0) and opts.categories == ["rock", "latin"]
    assert opts.mapping == {"user_id": "who", "rating": "stars"} and opts.strict and opts.history == 3
    bad = _parser().parse_args(["--source", "csv", "--path", "p", "--out", "o", "--time-cut", "0.9,0.5"])
    with pytest.raises(DataError, match=r"^--time-cut: 0.9 must be below 0.5$"):
        options_from_args(bad)
    bad = _parser().parse_args(["--source", "csv", "--path", "p", "--out", "o", "--map", "user_id"])
    with pytest.raises(DataError, match=r"^--map: 'user_id' must look like canonical=source_column"):
        options_from_args(bad)


def test_auto_prepare_is_the_same_model():
    assert issubclass(AutoPrepare, PrepareOptions)
    assert set(PrepareOptions.model_fields) < set(AutoPrepare.model_fields)


def test_recipe_prepare_out_must_be_the_data_path(tmp_path):
    from kit.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.prepare.out \(elsewhere\) differs from data.path"):
        load_config("gpu-16gb", [f"data.path={tmp_path}", "data.prepare.out=elsewhere"])


def test_recipe_prepare_options_reach_prepare_unchanged(tmp_path):
    F.amazon2023(tmp_path / "raw" / "Digital_Music", gz=False)
    cfg = load_config("gpu-16gb", [f"data.path={tmp_path / 'prepared'}", f"data.prepare.raw_dir={tmp_path / 'raw'}",
                                   "data.prepare.kcore=0", "data.prepare.history=3", "data.prepare.item_history=1",
                                   "data.prepare.min_history=1", "data.prepare.split=time",
                                   "data.prepare.time_cut=[0.4, 0.7]", "data.prepare.seed=7",
                                   "data.prepare.review_chars=50", "data.prepare.engine=lines",
                                   "data.prepare.max_train=1", "data.prepare.description_chars=80"])
    stats = prepare_on_first_use(cfg.data.prepare, cfg.data.path)
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    embedded = cfg.data.prepare.model_dump(mode="json", exclude={"category", "raw_dir", "path", "out"})
    assert {k: v for k, v in meta["options"].items() if k not in ("path", "out")} == embedded
    assert meta["options"]["out"] == str(tmp_path / "prepared")
    assert meta["options"]["path"] == str(tmp_path / "raw" / "Digital_Music")
    assert embedded["max_valid"] == 1000 and embedded["max_test"] == 2000  # the recipe's own values
    assert embedded["history"] == 3 and embedded["time_cut"] == [0.4, 0.7] and embedded["engine"] == "lines"
    assert sum(stats["samples"].values()) == 2 and stats["samples"]["train"] <= 1
