"""One model per process: loads of the same base share it, adapters switch per call, and
n sampled answers are n different draws (the real Unsloth CPU path, a tiny model)."""
from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def cfg(tiny_model_dir):
    from kit.config import load_config

    # float32 pinned: the base-logits check below compares with the checkpoint loaded in float32
    return load_config("smoke", [f"model.name={tiny_model_dir}", "model.dtype=float32"])


def _perturbed_adapter(base_dir, out, seed: int) -> str:
    """A LoRA adapter whose B matrices are far from zero, so it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0)
    model.save_pretrained(str(out))
    return str(out)


def _prompt(tokenizer) -> str:
    from kit.prompts import render_chat

    return render_chat(tokenizer, [{"role": "user", "content": "Rate this book, please."}])


def test_one_model_per_process_and_adapters_switch_per_call(cfg, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from kit.model import adapter_context, generate, load_adapter, load_model

    base = load_adapter(cfg.model, None)
    tuned = load_adapter(cfg.model, _perturbed_adapter(tiny_model_dir, tmp_path / "a", seed=1))
    again = load_adapter(cfg.model, None)
    assert tuned.model is base.model is again.model is load_model(cfg.model, lora=False).model

    prompt = _prompt(base.tokenizer)
    answer = {}
    for label, handle in (("base", base), ("tuned", tuned), ("base again", again), ("tuned again", tuned)):
        answer[label] = generate(handle, [prompt], max_new_tokens=16, progress=False)[0]
    assert answer["tuned"] != answer["base"]
    assert answer["base again"] == answer["base"] and answer["tuned again"] == answer["tuned"]

    # "base" is the model without any adapter: the same logits as the plain checkpoint
    ids = base.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad(), adapter_context(base) as model:
        shared_logits = model(**ids).logits.float()
        assert torch.allclose(shared_logits, plain(**ids).logits, atol=1e-4)


def test_an_adapter_folder_rewritten_in_place_is_read_again(cfg, tiny_model_dir, tmp_path):
    from kit.model import generate, load_adapter

    folder = tmp_path / "adapter"
    tuned = load_adapter(cfg.model, _perturbed_adapter(tiny_model_dir, folder, seed=2))
    prompt = _prompt(tuned.tokenizer)
    first = generate(tuned, [prompt], max_new_tokens=16, progress=False)[0]
    time.sleep(0.05)  # a later save, as a new training run would write
    _perturbed_adapter(tiny_model_dir, folder, seed=3)
    assert generate(tuned, [prompt], max_new_tokens=16, progress=False)[0] != first  # not the stale copy


def test_a_training_load_reuses_the_model_with_a_fresh_adapter(cfg, tiny_model_dir, tmp_path):
    from kit.model import TRAINING_ADAPTER, generate, load_adapter, load_model

    tuned = load_adapter(cfg.model, _perturbed_adapter(tiny_model_dir, tmp_path / "a", seed=4))
    prompt = _prompt(tuned.tokenizer)
    before = generate(tuned, [prompt], max_new_tokens=16, progress=False)[0]
    training = load_model(cfg.model, seed=0)
    assert training.model is tuned.model
    assert list(training.model.peft_config) == [TRAINING_ADAPTER]  # saved adapters dropped, as in a new process
    lora_b = [p for n, p in training.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad and not p.any() for p in lora_b)  # starts from zero, trainable
    assert generate(tuned, [prompt], max_new_tokens=16, progress=False)[0] == before  # re-attached when asked
    assert all(p.requires_grad for n, p in training.model.named_parameters() if "lora_B" in n and ".default." in n)


def test_n_answers_are_distinct_draws_grouped_by_prompt(cfg):
    from kit.model import generate, load_adapter

    base = load_adapter(cfg.model, None)
    one, two = _prompt(base.tokenizer), _prompt(base.tokenizer).replace("please", "now")
    sampled = generate(base, [one, two], max_new_tokens=12, temperature=1.0, n=4, seed=7, progress=False)
    assert len(sampled) == 8
    assert len(set(sampled[:4])) > 1 and len(set(sampled[4:])) > 1
    greedy = generate(base, [one, two], max_new_tokens=12, n=2, progress=False)
    alone = [generate(base, [p], max_new_tokens=12, progress=False)[0] for p in (one, two)]
    assert greedy == [alone[0], alone[0], alone[1], alone[1]]
