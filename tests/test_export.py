"""kit.export: a run's adapter merged into its base gives the same logits as base + adapter."""
from __future__ import annotations

import json

import pytest


@pytest.fixture()
def tiny_run(tiny_model_dir, tmp_path):
    """A run folder as kit.train leaves it: config.yaml and adapter/ (LoRA B not zero)."""
    import kit.runtime  # noqa: F401
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kit.config import dump_config, load_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config("smoke", [f"model.name={tiny_model_dir}"])))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(str(run / "adapter"))
    return run


def test_the_merged_model_answers_as_base_plus_adapter(tiny_run, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.export import main

    out = tmp_path / "merged"
    assert main(["--run", str(tiny_run), "--merged", str(out), "--dtype", "float32"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert "chat_template" in json.dumps(json.loads((out / "tokenizer_config.json").read_text())) or \
        (out / "chat_template.jinja").is_file()
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("<analyze user> likes mysteries </analyze user>", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(out))(**ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        plain = base(**ids).logits
        adapted = PeftModel.from_pretrained(base, str(tiny_run / "adapter"))(**ids).logits
    assert (adapted - plain).abs().max() > 1e-3  # the adapter changes the answer ...
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=1e-4)  # ... and the merge keeps that change


def test_export_errors_name_the_fix(tiny_run, tmp_path, capsys, monkeypatch):
    from kit.export import main

    assert main(["--run", str(tmp_path / "nothing"), "--merged", str(tmp_path / "m")]) == 2
    assert "holds no adapter" in capsys.readouterr().err
    monkeypatch.delenv("LLAMA_CPP", raising=False)
    assert main(["--run", str(tiny_run), "--merged", str(tmp_path / "m"), "--gguf", str(tmp_path / "m.gguf")]) == 2
    assert "convert_hf_to_gguf.py was not found" in capsys.readouterr().err
    assert (tmp_path / "m" / "model.safetensors").is_file()  # the merged folder is written either way


def test_a_machine_short_of_memory_merges_in_the_output_precision(tiny_run, tmp_path, monkeypatch, capsys):
    """float32 where the free memory holds it with 20% to spare, else the output precision, said."""
    import psutil
    import torch
    from safetensors.torch import load_file

    from kit.export import main, merge_dtype

    assert merge_dtype(3_090_000_000, "bfloat16", 16 * 10**9) == ("float32", None)
    work, why = merge_dtype(3_090_000_000, "bfloat16", 12 * 10**9)  # a free Colab and a 3B model
    assert work == "bfloat16" and "float32 would need 14.8 GB and 12.0 GB is free" in why
    assert merge_dtype(3_090_000_000, "float32", 10**9) == ("float32", None)  # asked for: never rounded

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=10_000))
    out = tmp_path / "merged-bf16"
    assert main(["--run", str(tiny_run), "--merged", str(out)]) == 0
    assert "kit: merging in bfloat16: float32 would need" in capsys.readouterr().out
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
