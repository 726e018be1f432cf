"""The one place that knows Unsloth, vLLM and `generate`.

Faces ask for "a model with LoRA", "a model with this adapter" and "answers for these
prompts". Unsloth is imported first (it patches trl/transformers/peft); without a GPU
its CPU fallback loads through plain transformers + peft.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import kit.runtime  # noqa: F401  (imports unsloth first, quietly)
from kit.config import ModelConfig
from kit.model_sources import resolve_model_source


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    fast_inference: bool
    source: str
    adapter_dir: str | None = None  # with vLLM the adapter is applied per request, not merged


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and os.environ.get("UNSLOTH_FORCE_CPU") != "1"


def _dtype(name: str):
    """The torch dtype for `model.dtype` on this machine (kit.precision: bf16 only where it is native)."""
    import torch

    from kit.precision import resolve_precision

    return getattr(torch, resolve_precision(name, has_gpu()).dtype)


def _want_vllm(cfg: ModelConfig) -> bool:
    available = has_gpu() and importlib.util.find_spec("vllm") is not None
    if cfg.fast_inference == "on" and not available:
        raise RuntimeError("model.fast_inference=on needs a CUDA GPU and vLLM (pip install -e '.[gpu]'); "
                           "use model.fast_inference=auto to fall back to transformers generate")
    return cfg.fast_inference == "on" or (cfg.fast_inference == "auto" and available)


def load_model(cfg: ModelConfig, seed: int = 0, lora: bool = True) -> LoadedModel:
    """Base model through Unsloth's FastLanguageModel (4-bit if asked), with LoRA adapters attached."""
    from unsloth import FastLanguageModel

    source = resolve_model_source(cfg.name)
    fast = _want_vllm(cfg)
    kwargs: dict[str, Any] = dict(model_name=source, max_seq_length=cfg.max_seq_length,
                                  load_in_4bit=cfg.load_in_4bit, dtype=_dtype(cfg.dtype))
    if fast:
        kwargs.update(fast_inference=True, max_lora_rank=cfg.max_lora_rank,
                      gpu_memory_utilization=cfg.gpu_memory_utilization)
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up; on BPE it only warns (or corrupts)
    if lora:
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), bias="none",
            use_gradient_checkpointing="unsloth" if (cfg.gradient_checkpointing and has_gpu()) else cfg.gradient_checkpointing,
            random_state=seed)
    return LoadedModel(model=model, tokenizer=tokenizer, device="cuda" if has_gpu() else "cpu",
                       fast_inference=fast, source=source)


def load_adapter(cfg: ModelConfig, adapter_dir: str | Path | None) -> LoadedModel:
    """The base model with a saved LoRA adapter (or none: the untrained base).

    With vLLM (GPU) the adapter is passed as a LoRA request at generation time; otherwise
    it is attached with peft."""
    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json is missing)")
    if _want_vllm(cfg):
        loaded = load_model(cfg, lora=True)
        loaded.adapter_dir = str(adapter_dir) if adapter_dir else None
        return loaded
    loaded = load_model(cfg, lora=False)
    if adapter_dir is not None:
        from peft import PeftModel

        loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
        loaded.adapter_dir = str(adapter_dir)
    loaded.model.eval()
    return loaded


def generate(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, batch_size: int = 8, seed: int = 0, adapter_dir: str | Path | None = None,
             progress: bool = True, desc: str = "generating", use_adapter: bool = True,
             stop: Sequence[str] = ()) -> list[str]:
    """Completions for chat-rendered prompt texts; greedy when temperature is 0.
    `use_adapter=False` answers with the base model (same weights in memory, LoRA switched off).
    `stop`: strings after which an answer is complete (kept in its text)."""
    if loaded.fast_inference:
        return _generate_vllm(loaded, prompts, max_new_tokens, temperature, top_p, seed,
                              (adapter_dir or loaded.adapter_dir) if use_adapter else None, stop)
    with _adapter_switch(loaded, use_adapter):
        return _generate_hf(loaded, prompts, max_new_tokens, temperature, top_p, batch_size, seed, progress, desc,
                            stop)


def _adapter_switch(loaded: LoadedModel, use_adapter: bool):
    import contextlib

    if use_adapter or not hasattr(loaded.model, "disable_adapter"):
        return contextlib.nullcontext()
    return loaded.model.disable_adapter()


def stream_generate(loaded: LoadedModel, prompt: str, max_new_tokens: int = 256, temperature: float = 0.0,
                    seed: int = 0, use_adapter: bool = True):
    """Yield the growing completion text for one prompt (token by token without vLLM)."""
    if loaded.fast_inference:
        yield generate(loaded, [prompt], max_new_tokens, temperature, seed=seed, progress=False,
                       use_adapter=use_adapter)[0]
        return
    import threading

    import torch
    from transformers import TextIteratorStreamer

    tok, model = loaded.tokenizer, loaded.model
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    sampling = temperature > 0
    kwargs = dict(**enc, max_new_tokens=max_new_tokens, do_sample=sampling, streamer=streamer,
                  temperature=temperature if sampling else None, top_p=None, top_k=None,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    errors: list[BaseException] = []

    def work():
        try:
            torch.manual_seed(seed)
            with torch.no_grad(), _adapter_switch(loaded, use_adapter):
                model.generate(**kwargs)
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()
    if errors:
        raise errors[0]


def _generate_vllm(loaded, prompts, max_new_tokens, temperature, top_p, seed, adapter_dir, stop=()):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=list(stop) or None, include_stop_str_in_output=True)
    lora_request = loaded.model.load_lora(str(adapter_dir)) if adapter_dir else None
    outputs = loaded.model.fast_generate(list(prompts), sampling_params=params, lora_request=lora_request)
    return [o.outputs[0].text for o in outputs]


@functools.lru_cache(maxsize=4)
def _stop_criteria(tokenizer, stop: tuple[str, ...]):
    """transformers' stop-string criterion, built once per tokenizer (it indexes the whole
    vocabulary: ~1.7 s for SmolLM2's on 2 cores, per generate call if passed as stop_strings)."""
    from transformers import StoppingCriteriaList
    from transformers.generation.stopping_criteria import StopStringCriteria

    return StoppingCriteriaList([StopStringCriteria(tokenizer, list(stop))])


def _generate_hf(loaded, prompts, max_new_tokens, temperature, top_p, batch_size, seed, progress, desc, stop=()):
    """transformers `generate` in batches, without autograd bookkeeping (inference_mode). Each
    sequence stops at its end-of-turn token or once it has written one of `stop` (its text then
    ends with that string); a finished sequence is padded while the rest of its batch goes on."""
    import torch
    from tqdm.auto import tqdm

    model, tok = loaded.model, loaded.tokenizer
    tok.padding_side = "left"
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    out: list[str] = []
    batches = range(0, len(prompts), batch_size)
    stopping = {"stopping_criteria": _stop_criteria(tok, tuple(stop))} if stop else {}
    for start in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        chunk = list(prompts[start:start + batch_size])
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        sampling = temperature > 0
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sampling,
                                 temperature=temperature if sampling else None, top_p=top_p if sampling else None,
                                 top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 **stopping)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += tok.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return out
