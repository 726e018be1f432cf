"""Shared fixtures: everything offline, on CPU, with real components."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import kit.runtime  # noqa: F401,E402  (unsloth first, as in every entry point)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's real tokenizer and chat template, built here."""
    from kit.model_sources import tiny_random_folder

    return tiny_random_folder(cache=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def smol_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))
