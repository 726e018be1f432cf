"""The one place that knows Unsloth, peft, vLLM and `generate`.

Two backends (kit.backend): `unsloth` loads through FastLanguageModel; `trl` through plain
transformers + peft (kit.trl_backend), for several processes under accelerate.

Faces ask for "a model with LoRA", "a model with this adapter" and "answers for these
prompts". Unsloth is imported first (it patches trl/transformers/peft); without a GPU
its CPU fallback loads through plain transformers + peft.

One model per process. Every load of the same base (same model settings) returns the
same weights in memory: training, kit.evaluate, the app and the notebook share it. With
vLLM that is one engine (each takes gpu_memory_utilization of the card and none is ever
freed). Adapters switch per request instead of per load: with vLLM one cached LoRA
request per adapter folder, and the base is "no request" (4-bit base weights are never
merged); without vLLM the saved adapters hang on the one peft model under their own
names and are switched on for the call, and the base is "adapters disabled".
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import kit.runtime  # noqa: F401  (imports unsloth first, quietly)
from kit.config import ConfigError, ModelConfig
from kit.model_sources import resolve_model_source

TRAINING_ADAPTER = "default"  # the name get_peft_model gives the adapter being trained


@dataclass
class _Shared:
    """The process's one loaded base model and what hangs on it."""

    model: Any
    tokenizer: Any
    device: str
    fast_inference: bool
    source: str
    saved: dict[str, tuple[tuple, str]] = field(default_factory=dict)  # folder -> (files' signature, peft name)
    lora_requests: dict[tuple, Any] = field(default_factory=dict)       # files' signature -> vLLM LoRARequest


_MODELS: dict[tuple, _Shared] = {}


class _FromShared:
    """An attribute of LoadedModel read from its shared load (model, tokenizer, device, ...)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.shared, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"LoadedModel.{self.name} belongs to the shared load: every handle sees the same one")


@dataclass
class LoadedModel:
    """A handle on the process's one model, and which adapter answers through it.

    `adapter_dir`: a saved adapter (None: the base). `live_adapter`: the in-memory adapter
    being trained answers (without vLLM; vLLM needs a saved folder in `adapter_dir`)."""

    shared: _Shared
    adapter_dir: str | None = None
    live_adapter: bool = False

    # the loaded weights' parts, read through the shared load
    model = _FromShared()
    tokenizer = _FromShared()
    device = _FromShared()
    fast_inference = _FromShared()
    source = _FromShared()


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and os.environ.get("UNSLOTH_FORCE_CPU") != "1"


def check_device(device: str, cfg: ModelConfig) -> str:
    """The device a load will use; a clear stop when the config asks for a GPU this
    process cannot use, instead of a silent fall back to CPU (hours instead of minutes)."""
    import torch

    wants = "device: cuda" if device == "cuda" else ("model.fast_inference: on" if cfg.fast_inference == "on" else None)
    if wants and not torch.cuda.is_available():
        raise ConfigError(f"{wants} asks for a GPU, but torch.cuda.is_available() is False (torch {torch.__version__}): "
                          "use a GPU runtime with a CUDA build of torch that its driver supports, or set device=auto "
                          "and model.fast_inference=auto to run on CPU")
    if wants and not has_gpu():
        raise ConfigError(f"{wants} asks for a GPU, but UNSLOTH_FORCE_CPU=1 is set: unset it, or set device=auto")
    if device == "cpu" and has_gpu():
        raise ConfigError("device: cpu on a machine with a GPU: start the process with UNSLOTH_FORCE_CPU=1 "
                          "(Unsloth chooses its device when it is imported), or set device=auto")
    return "cuda" if has_gpu() else "cpu"


def _dtype(name: str):
    """The torch dtype for `model.dtype` on this machine (kit.precision: bf16 only where it is native)."""
    import torch

    from kit.precision import resolve_precision

    return getattr(torch, resolve_precision(name, has_gpu()).dtype)


def _vllm_requested(cfg: ModelConfig) -> bool:
    """model.fast_inference on, or auto where a GPU and vLLM exist; a clear stop for `on` without them."""
    available = has_gpu() and importlib.util.find_spec("vllm") is not None
    if cfg.fast_inference == "on" and not available:
        raise ConfigError("model.fast_inference=on needs a CUDA GPU and vLLM (pip install -e '.[gpu]'); "
                          "use model.fast_inference=auto to fall back to transformers generate")
    return cfg.fast_inference == "on" or (cfg.fast_inference == "auto" and available)


def _want_vllm(cfg: ModelConfig) -> bool:
    """Whether kit's own generation runs on a vLLM engine in this process (the unsloth backend;
    with backend=trl vLLM serves TRL's training only, see `trl_vllm`)."""
    if kit.runtime.BACKEND == "trl":
        return False
    fast = _vllm_requested(cfg)
    if fast and cfg.load_in_4bit and importlib.util.find_spec("vllm_bnb_plugin") is None:
        raise ConfigError("model.load_in_4bit with vLLM needs the package vllm-bnb-plugin (vLLM >= 0.28 moved "
                          "bitsandbytes out of tree): pip install -e '.[gpu]', or set model.fast_inference=off")
    return fast


def trl_vllm(cfg: ModelConfig) -> bool:
    """backend=trl: whether TRL generates its GRPO rollouts with vLLM (model.fast_inference: on,
    or auto where a GPU and vLLM exist); the mode and server come from grpo.vllm_mode / _url."""
    return _vllm_requested(cfg)


def _key(cfg: ModelConfig, source: str, device: str, fast: bool) -> tuple:
    engine = (cfg.gpu_memory_utilization, cfg.max_lora_rank) if fast else ()
    return (source, cfg.max_seq_length, cfg.load_in_4bit, cfg.dtype, device, fast, *engine)


def _shared_base(cfg: ModelConfig, device: str = "auto") -> _Shared:
    """The loaded base for these settings: loaded once per process, then reused."""
    resolved = check_device(device, cfg)
    source = resolve_model_source(cfg.name)
    fast = _want_vllm(cfg)
    key = _key(cfg, source, resolved, fast)
    if key in _MODELS:
        return _MODELS[key]
    engines = [s for s in _MODELS.values() if s.fast_inference]
    if fast and engines:
        raise ConfigError(f"a vLLM engine for {engines[0].source} already holds its share of the GPU in this process, "
                          f"and {cfg.name} with these model settings would start a second one (engines are never "
                          "freed): use the same model settings, or restart the process / runtime")
    if kit.runtime.BACKEND == "trl":
        from kit.trl_backend import load_base

        model, tokenizer = load_base(source, cfg, _dtype(cfg.dtype), resolved)
    else:
        from unsloth import FastLanguageModel

        kwargs: dict[str, Any] = dict(model_name=source, max_seq_length=cfg.max_seq_length,
                                      load_in_4bit=cfg.load_in_4bit, dtype=_dtype(cfg.dtype))
        if fast:
            kwargs.update(fast_inference=True, max_lora_rank=cfg.max_lora_rank,
                          gpu_memory_utilization=cfg.gpu_memory_utilization)
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up; on BPE it only warns (or corrupts)
    _MODELS[key] = _Shared(model=model, tokenizer=tokenizer, device=resolved, fast_inference=fast, source=source)
    return _MODELS[key]


def load_model(cfg: ModelConfig, seed: int = 0, lora: bool = True, device: str = "auto") -> LoadedModel:
    """The process's base model through Unsloth's FastLanguageModel (4-bit if asked), with a
    fresh LoRA adapter to train (`lora=True`). A fresh adapter replaces every adapter the
    model carried, so a second training run in one process starts where a new process would."""
    shared = _shared_base(cfg, device)
    if not lora:
        return LoadedModel(shared)
    from peft import PeftModel

    base = shared.model
    if isinstance(base, PeftModel):
        base = base.unload()  # the bare base again (LoRA layers removed, nothing merged)
        shared.saved.clear()
    if kit.runtime.BACKEND == "trl":
        from kit.trl_backend import add_lora

        shared.model = add_lora(base, cfg.lora, seed)
        return LoadedModel(shared, live_adapter=True)
    from unsloth import FastLanguageModel

    shared.model = FastLanguageModel.get_peft_model(
        base, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), bias="none",
        use_gradient_checkpointing="unsloth" if (cfg.gradient_checkpointing and has_gpu()) else cfg.gradient_checkpointing,
        random_state=seed)
    return LoadedModel(shared, live_adapter=True)


def load_adapter(cfg: ModelConfig, adapter_dir: str | Path | None, device: str = "auto") -> LoadedModel:
    """A handle that answers with a saved LoRA adapter (or none: the untrained base), on
    the process's one base model. The adapter is read now, so a bad folder fails here."""
    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json is missing)")
    shared = _shared_base(cfg, device)
    loaded = LoadedModel(shared, adapter_dir=str(adapter_dir) if adapter_dir is not None else None)
    if loaded.adapter_dir is not None:
        if shared.fast_inference:
            _lora_request(shared, loaded.adapter_dir)
        else:
            _peft_adapter(shared, loaded.adapter_dir)
    shared.model.eval()
    return loaded


def _signature(adapter_dir: str) -> tuple:
    """Which files an adapter folder holds now: a folder rewritten in place is a new adapter."""
    folder = Path(adapter_dir).resolve()
    files = sorted(p for p in folder.iterdir() if p.name.startswith("adapter_"))
    stats = [(p.name, p.stat()) for p in files]
    return (str(folder), *((name, st.st_ino, st.st_mtime_ns, st.st_size) for name, st in stats))


def _lora_request(shared: _Shared, adapter_dir: str):
    """One vLLM LoRA request per adapter (each new request registers a new LoRA id)."""
    sig = _signature(adapter_dir)
    if sig not in shared.lora_requests:
        load = getattr(shared.model, "load_lora", None)
        if load is None:  # a base without peft: Unsloth's loader needs only the engine
            from unsloth_zoo.vllm_utils import load_lora

            def load(path):
                return load_lora(shared.model, path)
        shared.lora_requests[sig] = load(str(Path(adapter_dir).resolve()))
    return shared.lora_requests[sig]


def _peft_adapter(shared: _Shared, adapter_dir: str) -> str:
    """The peft name of a saved adapter attached to the one model (attached on first use;
    a folder whose files changed is attached again and the stale copy dropped)."""
    from peft import PeftModel

    folder = str(Path(adapter_dir).resolve())
    sig = _signature(adapter_dir)
    known = shared.saved.get(folder)
    if known and known[0] == sig:
        return known[1]
    name = "saved_" + hashlib.sha1(repr(sig).encode()).hexdigest()[:12]
    if isinstance(shared.model, PeftModel):
        shared.model.load_adapter(folder, adapter_name=name, is_trainable=False)
        if known:
            shared.model.delete_adapter(known[1])
    else:
        shared.model = PeftModel.from_pretrained(shared.model, folder, adapter_name=name, is_trainable=False)
    shared.saved[folder] = (sig, name)
    return name


def _trainable(model, name: str) -> bool:
    return any(p.requires_grad for n, p in model.named_parameters() if f".{name}." in n)


@contextlib.contextmanager
def adapter_context(loaded: LoadedModel, use_adapter: bool = True) -> Iterator[Any]:
    """Within it, direct calls on `loaded.model` answer with this handle's adapter (or the
    base with `use_adapter=False`); the adapter active before is restored after. kit's own
    generation uses it; use it too for a forward pass of your own on a shared model."""
    from peft import PeftModel

    name = None
    if use_adapter and loaded.live_adapter:
        name = TRAINING_ADAPTER
    elif use_adapter and loaded.adapter_dir is not None:
        name = _peft_adapter(loaded.shared, loaded.adapter_dir)  # with vLLM too: HF calls need it attached
    model = loaded.model
    if not isinstance(model, PeftModel):
        yield model
        return
    if name is None:
        with model.disable_adapter():
            yield model
        return
    previous = model.active_adapter
    if previous == name:
        yield model
        return
    previous_trainable = _trainable(model, previous)
    model.set_adapter(name, inference_mode=name != TRAINING_ADAPTER)
    try:
        yield model
    finally:
        model.set_adapter(previous, inference_mode=not previous_trainable)


def generate(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, batch_size: int = 8, seed: int = 0, adapter_dir: str | Path | None = None,
             progress: bool = True, desc: str = "generating", use_adapter: bool = True, n: int = 1,
             stop: Sequence[str] = ()) -> list[str]:
    """Completions for chat-rendered prompt texts; greedy when temperature is 0.
    `n` answers per prompt, grouped by prompt (distinct draws when sampling).
    `use_adapter=False` answers with the base model (same weights in memory, LoRA switched off);
    `adapter_dir` answers with that saved adapter instead of the handle's.
    `stop`: strings after which an answer is complete (kept in its text)."""
    if adapter_dir is not None:
        loaded = LoadedModel(loaded.shared, adapter_dir=str(adapter_dir))
    if loaded.fast_inference:
        return _generate_vllm(loaded, prompts, max_new_tokens, temperature, top_p, seed, use_adapter, n, stop)
    expanded = [p for p in prompts for _ in range(n)]
    with adapter_context(loaded, use_adapter):
        return _generate_hf(loaded, expanded, max_new_tokens, temperature, top_p, batch_size, seed, progress, desc,
                            stop)


def next_token_probs(loaded: LoadedModel, texts: Sequence[str], token_ids: Sequence[int], batch_size: int = 8,
                     use_adapter: bool = True) -> list[list[float]]:
    """For each text (a chat-rendered prompt plus the start of an answer), the probability of each
    of `token_ids` as the very next token (softmax over the whole vocabulary, not renormalised).
    transformers: one forward pass per batch, left-padded. vLLM: one greedy token with its top-20
    log-probabilities; a token outside those 20 counts as 0."""
    if loaded.fast_inference:
        return _next_token_probs_vllm(loaded, texts, token_ids, use_adapter)
    import torch

    tok = loaded.tokenizer
    tok.padding_side = "left"
    out: list[list[float]] = []
    with adapter_context(loaded, use_adapter) as model:
        device = next(model.parameters()).device
        index = torch.tensor(list(token_ids), device=device)
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            with torch.inference_mode():
                logits = model(**enc).logits[:, -1, :].float()
            out += torch.softmax(logits, dim=-1)[:, index].tolist()
    return out


def _next_token_probs_vllm(loaded, texts, token_ids, use_adapter):
    import math

    from vllm import SamplingParams

    params = SamplingParams(n=1, max_tokens=1, temperature=0.0, logprobs=20)
    adapter = loaded.adapter_dir if use_adapter else None
    lora_request = _lora_request(loaded.shared, adapter) if adapter else None
    outputs = loaded.model.fast_generate(list(texts), sampling_params=params, lora_request=lora_request)
    probs = []
    for o in outputs:
        top = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
        probs.append([math.exp(top[t].logprob) if t in top else 0.0 for t in token_ids])
    return probs


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
            with torch.no_grad(), adapter_context(loaded, use_adapter) as active:
                active.generate(**kwargs)
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


def _generate_vllm(loaded, prompts, max_new_tokens, temperature, top_p, seed, use_adapter, n, stop=()):
    """One request per prompt with n answers: vLLM seeds the k-th answer with seed + k, so the
    n answers differ (n copies of a prompt under one seed would be n identical answers)."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=list(stop) or None, include_stop_str_in_output=True)
    adapter = loaded.adapter_dir if use_adapter else None
    lora_request = _lora_request(loaded.shared, adapter) if adapter else None
    outputs = loaded.model.fast_generate(list(prompts), sampling_params=params, lora_request=lora_request)
    return [c.text for o in outputs for c in o.outputs]


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


# --------------------------------------------------------------------------- adapters and trainers

def trainer_flags(cfg: ModelConfig) -> dict:
    """The device, precision and backend flags of a TRL trainer on this machine. On a GPU Unsloth
    sets gradient checkpointing on the model itself; with backend=trl, or on a CPU, the trainer does."""
    from kit.processes import world_size

    flags: dict[str, Any] = {}
    if kit.runtime.BACKEND == "trl":
        flags = {"gradient_checkpointing": cfg.gradient_checkpointing,
                 "gradient_checkpointing_kwargs": {"use_reentrant": False}}
        if world_size() > 1:  # every LoRA weight gets a gradient: DDP need not search for unused ones
            flags["ddp_find_unused_parameters"] = False
    if not has_gpu():
        # TRL's trainers default gradient checkpointing to on; on a CPU Unsloth leaves the model as
        # plain transformers, so without this the recipe's `false` would silently recompute every layer
        flags.setdefault("gradient_checkpointing", cfg.gradient_checkpointing)
        return {**flags, "use_cpu": True, "bf16": False, "fp16": False}
    import torch

    bf16 = torch.cuda.is_bf16_supported()
    return {**flags, "bf16": bf16, "fp16": not bf16}


def save_adapter(lm: LoadedModel, path: Path) -> None:
    """Save LoRA + tokenizer atomically (a temp folder renamed into place)."""
    import shutil

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.model.save_pretrained(str(tmp))
    lm.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def reload_adapter_weights(model, adapter_dir: Path) -> None:
    """Put a saved adapter's weights into the adapter being trained (resuming after priming)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(Path(adapter_dir) / "adapter_model.safetensors")))


def lora_nonzero(adapter_dir: Path) -> tuple[int, int]:
    """(non-zero lora_B tensors, lora_B tensors): lora_B starts at zero, so a trained adapter has some."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    b = [t for k, t in tensors.items() if "lora_B" in k]
    return sum(int(t.abs().sum() > 0) for t in b), len(b)
