"""Stage results on disk (evaluations, predictions, the priming adapter) are reused only when
the settings that produced them match the settings of the run asking for them.

Each result gets a fingerprint beside it, `<result>.settings.json`, written after the result
itself: its presence means the result is complete, and its content says what made it. A run
that finds a result with another fingerprint (or none) recomputes it and says, in one line,
which setting differs, so a number from an earlier configuration is never shown as its own.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from kit.io import atomic_write_json

SUFFIX = ".settings.json"
# data options that change which pairs are trained on, not what a prompt or a rating is
_TRAINING_ONLY_DATA = ("max_train", "max_eval", "eval_split")


# --------------------------------------------------------------------------- what made a result

def file_digest(path: Path | str | None) -> str | None:
    """A short content hash of a file (None for no file): identifies an adapter or a traces file."""
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def adapter_digest(adapter_dir: Path | str | None) -> str | None:
    """The content hash of a saved LoRA adapter's weights (None for the base model)."""
    return None if adapter_dir is None else file_digest(Path(adapter_dir) / "adapter_model.safetensors")


def pairs_digest(frame: Any) -> str:
    """A short hash of the (user, item, rating) pairs of a polars frame, in order."""
    h = hashlib.sha256()
    for u, i, r in zip(frame["user_id"], frame["item_id"], frame["rating"]):
        h.update(f"{u}\t{i}\t{float(r)!r}\n".encode())
    return h.hexdigest()[:16]


def model_dtype(model: Any, fallback: str) -> str:
    """The dtype the model was really loaded in ('bfloat16', 'float32', ...): 'auto' in a recipe
    resolves differently on different machines, so the resolved one is what counts."""
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else fallback


def data_settings(cfg: Any, scale: tuple[float, float]) -> dict:
    """What decides the pairs' prompts and ratings: the data options and the rating scale."""
    data = cfg.data.model_dump(mode="json")
    for key in _TRAINING_ONLY_DATA:
        data.pop(key, None)
    return {"data": data, "scale": [float(scale[0]), float(scale[1])]}


def eval_settings(cfg: Any, dtype: str, adapter_dir: Path | str | None, split: str,
                  scale: tuple[float, float], answers: int = 1, temperature: float = 0.0) -> dict:
    """Everything that changes an answer to a given pair: model, dtype, adapter, split, decoding,
    max new tokens, prompt, seed, data. Which pairs (and how many) is not part of it: a pair's
    answer does not depend on the others."""
    return {"model": {"name": cfg.model.name, "dtype": dtype, "load_in_4bit": cfg.model.load_in_4bit},
            "adapter": adapter_digest(adapter_dir), "split": split,
            "decoding": {"answers": answers, "temperature": temperature,
                         "max_new_tokens": cfg.evaluation.max_new_tokens,
                         "rating_distribution": cfg.evaluation.rating_distribution and answers == 1},
            "prompt": cfg.prompt.model_dump(mode="json"), "seed": cfg.seed, **data_settings(cfg, scale)}


def priming_settings(cfg: Any, dtype: str, scale: tuple[float, float]) -> dict:
    """Everything that changes the priming adapter: model, dtype, LoRA, priming options, data."""
    priming = cfg.priming.model_dump(mode="json")
    if priming.get("traces"):
        priming["traces_digest"] = file_digest(priming["traces"])
    return {"model": {"name": cfg.model.name, "dtype": dtype, "load_in_4bit": cfg.model.load_in_4bit,
                      "max_seq_length": cfg.model.max_seq_length, "lora": cfg.model.lora.model_dump(mode="json")},
            "priming": priming, "prompt": cfg.prompt.model_dump(mode="json"), "seed": cfg.seed,
            **data_settings(cfg, scale)}


# --------------------------------------------------------------------------- the rule

def settings_path(result: Path | str) -> Path:
    """`eval_before.json` -> `eval_before.settings.json`; `priming/adapter` -> `priming/adapter.settings.json`."""
    result = Path(result)
    return result.with_name(result.name.removesuffix(result.suffix) + SUFFIX)


def saved_settings(result: Path | str) -> dict | None:
    path = settings_path(result)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(saved: dict, wanted: dict) -> list[str]:
    """Readable 'setting: was -> now' for every setting that differs (dotted names)."""
    old, new = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(wanted)))
    absent = "(not set)"
    return [f"{k}: {json.dumps(old.get(k, absent))} -> {json.dumps(new.get(k, absent))}"
            for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]


def describe(diffs: list[str], limit: int = 3) -> str:
    shown = "; ".join(diffs[:limit])
    return shown + (f"; +{len(diffs) - limit} more" if len(diffs) > limit else "")


def mismatch(result: Path | str, settings: dict) -> str | None:
    """None when `result` exists and was made with `settings`; otherwise why it cannot be reused."""
    result = Path(result)
    if not result.exists():
        return "not computed yet"
    saved = saved_settings(result)
    if saved is None:
        return "no record of the settings that made it"
    if saved != json.loads(json.dumps(settings)):
        return "made with other settings: " + describe(differences(saved, settings))
    return None


def reusable(result: Path | str, settings: dict, log: Callable[[str], Any] = print) -> bool:
    """True when `result` exists with a fingerprint equal to `settings`. When it exists but was
    made otherwise (or its fingerprint is missing), say in one line why and return False: the
    caller recomputes it."""
    why = mismatch(result, settings)
    if why is not None and Path(result).exists():
        log(f"kit: note: {result} is not reused ({why}); recomputing")
    return why is None


def forget(result: Path | str) -> None:
    """Drop a result's fingerprint before recomputing it: a stop half-way leaves no stale match."""
    settings_path(result).unlink(missing_ok=True)


def remember(result: Path | str, settings: dict) -> None:
    """Record what made `result`; call after the result itself is completely written."""
    atomic_write_json(settings_path(result), settings)
