"""The `trl` backend's model: plain transformers + peft (+ bitsandbytes for 4-bit), no Unsloth.

kit.model calls this when the process runs backend=trl (kit.backend); TRL's trainers then run
it under `accelerate launch` on any number of processes. Unsloth's loader does three things for
the `unsloth` backend that are done here by hand: 4-bit loading, LoRA on the recipe's modules,
and, on a CPU, a log-probability path that needs no Triton (TRL's GRPO scores completions with a
fused LM head whose kernel is written in Triton, which has no CPU driver).
"""
from __future__ import annotations

from typing import Any

from kit.config import LoraConfig as LoraSettings
from kit.config import ModelConfig
from kit.processes import local_rank, weights_sharded


def load_base(source: str, cfg: ModelConfig, dtype, device: str) -> tuple[Any, Any]:
    """The base model and tokenizer from a folder or hub id, 4-bit (nf4, double quantization,
    computing in `dtype`) when the config asks; on a GPU each process puts it on its own card."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    if device == "cuda" and not weights_sharded():
        kwargs["device_map"] = {"": local_rank()}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if device == "cpu":
        use_torch_logprobs_on_cpu()
    return model, tokenizer


def add_lora(base, lora: LoraSettings, seed: int):
    """A fresh LoRA adapter (peft's name 'default') on the recipe's modules.

    No `prepare_model_for_kbit_training`: it upcasts every weight that is not 4-bit to float32,
    the embedding and the head included (on a 7B, 2.0 GiB more than bf16), which TRL's own
    QLoRA path does not do either. The frozen base stays in its compute dtype; the trainer turns
    gradient checkpointing on (kit.model.trainer_flags) and TRL makes the inputs carry gradients.

    With the weights split over the processes (ZeRO-3 / FSDP) on a 16-bit base, the adapter is
    kept in the base's dtype too: ZeRO-3 gathers parameters into buffers of one dtype, and a
    float32 adapter on a bf16 base fails at the first optimizer step (TRL does the same when it
    adds the adapter itself). On a 4-bit base TRL casts the adapter to bf16 in any case."""
    import torch
    from peft import LoraConfig, get_peft_model

    one_dtype = weights_sharded() and not getattr(base, "is_loaded_in_4bit", False)
    torch.manual_seed(seed)
    return get_peft_model(base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=list(lora.target_modules), bias="none",
                                           task_type="CAUSAL_LM"),
                          autocast_adapter_dtype=not one_dtype)


def torch_logprobs(hidden, weight, bias, targets, temperature: float, chunk_size: int = 0,
                   final_logit_softcapping: float | None = None, logit_scale: float = 1.0,
                   outputs: tuple[str, ...] = ("entropy",)):
    """What TRL's fused LM head computes, in plain torch (autograd gives the backward): per-token
    log-probabilities of `targets` under softmax(transform(hidden @ weight.T + bias)), and the
    requested extras, in TRL's order (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1).
    The full [tokens, vocabulary] logits are built in float32: fine for the sizes a CPU trains."""
    import torch

    logits = hidden.float() @ weight.float().t()
    if bias is not None:
        logits = logits + bias.float()
    logits = logits * logit_scale
    if final_logit_softcapping is not None:
        logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
    logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
    log_sum_sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
    mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
    is_top1 = (logits.argmax(-1) == targets) if "is_top1" in outputs else None
    return picked, entropy, log_sum_sq, mean_logits, is_top1


class _LogProbsByDevice:
    """Stands in for TRL's ChunkedLogProbFunction: its Triton kernel on a GPU, plain torch on a CPU."""

    def __init__(self, fused):
        self.fused = fused

    def apply(self, hidden, *args):
        if self.fused is not None and hidden.device.type in ("cuda", "xpu"):
            return self.fused.apply(hidden, *args)
        return torch_logprobs(hidden, *args)


def use_torch_logprobs_on_cpu() -> None:
    """Route TRL's fused LM head through `torch_logprobs` for CPU tensors (once per process)."""
    from trl.trainer import utils as trl_utils

    current = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not isinstance(current, _LogProbsByDevice):
        trl_utils._ChunkedLogProbFunction = _LogProbsByDevice(current)
