"""The `trl` backend: plain transformers + peft under accelerate, two real processes on CPU (gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def _env(tiny_model_dir: Path, **extra: str) -> dict:
    env = dict(os.environ, KIT_CACHE=str(tiny_model_dir.parent), PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="",
               **extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("KIT_BACKEND", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_share_one_run(tmp_path, tiny_model_dir):
    """accelerate launches two processes; each trains on prompts of its own, and the run folder
    holds one adapter, one metrics line per step and one summary, written by the main process."""
    out = tmp_path / "two"
    steps = 3
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "templates/accelerate/ddp.yaml",
           "--num_processes", "2", "--main_process_port", str(_free_port()),
           "-m", "kit.train", "--config", "smoke", "backend=trl", f"output_dir={out}", f"grpo.max_steps={steps}",
           "grpo.save_steps=3", "priming.samples=8", "evaluation.samples=4",
           "grpo.zero_variance=keep"]  # no redraws: each process sees exactly its share
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tiny_model_dir), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "trl" and summary["processes"] == 2
    # 1 prompt x 4 generations per process and step: 3 prompts each, none given to both
    assert summary["prompts_per_process"] == [steps, steps]
    assert summary["prompts_in_several_processes"] == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())["resolved"]
    assert (resolved["backend"], resolved["processes"], resolved["processes_per_machine"]) == ("trl", 2, 2)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    grpo_steps = Counter(r["step"] for r in rows if r["phase"] == "grpo" and "loss" in r)
    assert sorted(grpo_steps) == list(range(1, steps + 1)) and set(grpo_steps.values()) == {1}
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "adapter.tmp").exists()
    assert summary["adapter"]["lora_B_nonzero"] > 0
    assert {p.name for p in out.glob("eval_*.json")} >= {"eval_after.json", "eval_before.json", "eval_primed.json"}
    assert proc.stdout.count("kit: finished in") == 1  # the other process stays quiet
    assert "Unsloth" not in proc.stdout + proc.stderr  # the trl backend never imports it


def test_torch_logprobs_match_the_full_softmax():
    """The CPU stand-in for TRL's fused LM head gives what a plain softmax over the transformed
    logits gives, and carries gradients to the hidden states and the head."""
    import torch

    from kit.trl_backend import torch_logprobs

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    bias = torch.randn(50, generator=g)
    targets = torch.randint(0, 50, (7,), generator=g)
    logp, entropy, log_sum_sq, mean_logits, top1 = torch_logprobs(
        hidden, weight, bias, targets, 0.7, 8, final_logit_softcapping=5.0, logit_scale=0.5,
        outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))

    logits = 5.0 * torch.tanh((hidden @ weight.T + bias) * 0.5 / 5.0) / 0.7
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logp, dist.log_prob(targets))
    torch.testing.assert_close(entropy, dist.entropy())
    torch.testing.assert_close(log_sum_sq, torch.log((dist.probs ** 2).sum(-1)))
    torch.testing.assert_close(mean_logits, logits.mean(-1))
    assert torch.equal(top1, logits.argmax(-1) == targets)
    logp.sum().backward()
    assert hidden.grad is not None and weight.grad is not None and hidden.grad.abs().sum() > 0

    none = torch_logprobs(hidden, weight, None, targets, 1.0, 8, outputs=())
    assert none[1:] == (None, None, None, None)


def test_a_process_cannot_switch_backend():
    """This process imported unsloth (conftest): asking for trl now is a clear stop, not a silent mix."""
    from kit.backend import select_backend
    from kit.config import ConfigError

    assert select_backend("unsloth") == "unsloth"
    with pytest.raises(ConfigError, match="backend=trl, but this process already runs backend=unsloth"):
        select_backend("trl")


@pytest.mark.parametrize("env, args, message", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, [], "2 processes, but backend=unsloth runs on one: set backend=trl"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, ["backend=trl"],
     "evaluation.enabled with the weights split over the processes (ZeRO-3 / FSDP)"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["backend=trl", "--resume"],
     "--resume with several CPU processes: transformers 5.17 restores the optimizer state to 'cpu:0'"),
], ids=["several-processes-need-trl", "zero3-cannot-evaluate-in-run", "cpu-processes-cannot-resume"])
def test_launches_the_backend_cannot_serve_stop_first(tmp_path, tiny_model_dir, env, args, message):
    out = tmp_path / "x"
    if "--resume" in args:  # a run stopped after its first checkpoint
        (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "kit.train", "--config", "smoke", f"output_dir={out}", *args],
                          cwd=REPO, env=_env(tiny_model_dir, **env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"kit: error: {message}" in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("name, stage", [("ddp", None), ("zero2", 2), ("zero3", 3)])
def test_accelerate_templates_load(name, stage):
    """accelerate reads each template as a cluster config of the kind its comment says."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "templates" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == ("MULTI_GPU" if stage is None else "DEEPSPEED")
    assert (cfg.deepspeed_config or {}).get("zero_stage") == stage
    assert cfg.mixed_precision == "no"  # the trainer's own bf16 / fp16 flags decide


_LORA_PROBE = """
import json, sys
from kit.backend import select_backend
select_backend("trl")
import torch
from kit.config import ModelConfig
from kit.model import load_model

lm = load_model(ModelConfig(name=sys.argv[1], load_in_4bit=sys.argv[2] == "4bit", dtype="bfloat16"), device="cpu")
model = lm.model
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.train()
ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
model(input_ids=ids, labels=ids).loss.backward()
params = dict(model.named_parameters())
print(json.dumps({
    "frozen": {n: str(p.dtype) for n, p in params.items() if "lora_" not in n},
    "trainable": sorted(n for n, p in params.items() if p.requires_grad),
    "lora_dtypes": sorted({str(p.dtype) for n, p in params.items() if "lora_" in n}),
    "lora_B_grads": [float(p.grad.abs().sum()) for n, p in params.items() if "lora_B" in n],
}))
"""


def _lora_probe(tiny_model_dir: Path, weights: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _LORA_PROBE, str(tiny_model_dir), weights], cwd=REPO,
                          env=_env(tiny_model_dir, **env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_bit_base_stays_in_its_compute_dtype_and_lora_trains(tiny_model_dir):
    """backend=trl in 4-bit (bitsandbytes nf4 runs on a CPU too): what is not 4-bit stays in the
    compute dtype (no float32 copy of the embedding, head and norms), only LoRA is trainable, and
    a backward pass through checkpointed layers reaches every LoRA layer."""
    probe = _lora_probe(tiny_model_dir, "4bit")
    frozen = probe["frozen"]
    assert frozen["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == "torch.uint8"  # packed nf4
    unpacked = {n: d for n, d in frozen.items() if d != "torch.uint8"}
    assert "base_model.model.model.embed_tokens.weight" in unpacked and "base_model.model.model.norm.weight" in unpacked
    assert set(unpacked.values()) == {"torch.bfloat16"}, unpacked
    assert probe["trainable"] and all("lora_A" in n or "lora_B" in n for n in probe["trainable"])
    assert len(probe["lora_B_grads"]) == 2 * 7 and all(g > 0 for g in probe["lora_B_grads"])


@pytest.mark.parametrize("env, lora_dtypes", [
    ({}, ["torch.float32"]),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, ["torch.bfloat16"]),
], ids=["one-process", "zero3"])
def test_adapter_dtype_on_a_16_bit_base(tiny_model_dir, env, lora_dtypes):
    """A bf16 base gets a float32 adapter, except where ZeRO-3 splits the weights: its parameter
    gathering needs one dtype, so the adapter takes the base's (float32 there fails at the first step)."""
    probe = _lora_probe(tiny_model_dir, "16bit", **env)
    assert probe["lora_dtypes"] == lora_dtypes
    assert all(g > 0 for g in probe["lora_B_grads"])


def test_four_bit_run_trains_saves_and_reloads(tmp_path, tiny_model_dir):
    """The whole run on a 4-bit base with backend=trl: priming, GRPO through TRL's quantized-model
    path, the adapter saved with trained weights, then evaluated on the 4-bit base."""
    out = tmp_path / "q4"
    proc = subprocess.run([sys.executable, "-m", "kit.train", "--config", "smoke", "backend=trl",
                           "model.load_in_4bit=true", f"output_dir={out}", "grpo.max_steps=2", "grpo.save_steps=2",
                           "priming.samples=8", "evaluation.samples=4"],
                          cwd=REPO, env=_env(tiny_model_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "trl" and summary["adapter"]["lora_B_nonzero"] > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["load_in_4bit"] is True
    assert json.loads((out / "eval_after.json").read_text())["metrics"]["n"] == 4
    assert "Unsloth" not in proc.stdout + proc.stderr


def test_a_backend_typo_is_a_clear_stop(monkeypatch):
    """A misspelt backend, in the environment or in a config, names where it came from and the choices."""
    from kit.backend import requested_backend, select_backend
    from kit.config import ConfigError

    monkeypatch.setenv("KIT_BACKEND", "tlr")
    with pytest.raises(ConfigError, match=r"KIT_BACKEND='tlr' is not a backend: use one of unsloth, trl"):
        requested_backend()
    with pytest.raises(ConfigError, match=r"backend: 'unslot' is not a backend: use one of unsloth, trl"):
        select_backend("unslot")
