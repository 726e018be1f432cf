"""What the GPU path needs that a CPU can check: the same clipping on every device, and a
clear stop (not a silent CPU run) when a recipe asks for a GPU that is not there."""
from __future__ import annotations

import pytest
import yaml

from tests.test_train import kit_train


def test_grpo_args_carry_the_recipes_epsilon_high(tmp_path):
    from kit.config import dump_config, load_config
    from kit.train import grpo_args

    cfg = load_config("smoke")
    assert cfg.grpo.loss_type == "dapo"
    args = grpo_args(cfg, tmp_path, use_vllm=False)
    assert (args.epsilon, args.epsilon_high) == (0.2, 0.28)  # DAPO clip-higher, not TRL's CPU default (= epsilon)
    assert yaml.safe_load(dump_config(cfg))["grpo"]["epsilon_high"] == 0.28  # recorded in config.yaml
    symmetric = load_config("smoke", ["grpo.epsilon_high=null", "grpo.epsilon=0.1"])
    assert grpo_args(symmetric, tmp_path, use_vllm=False).epsilon_high == 0.1
    assert grpo_args(load_config("smoke", ["grpo.epsilon_high=0.3"]), tmp_path, use_vllm=False).epsilon_high == 0.3


@pytest.mark.parametrize("override,asked", [("device=cuda", "device: cuda"),
                                            ("model.fast_inference=on", "model.fast_inference: on")])
def test_a_gpu_request_without_a_gpu_stops_with_one_line(override, asked):
    import torch

    from kit.config import ConfigError, load_config
    from kit.model import check_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = load_config("smoke", [override])
    with pytest.raises(ConfigError) as err:
        check_device(cfg.device, cfg.model)
    message = str(err.value)
    assert message.startswith(asked) and "torch.cuda.is_available() is False" in message and "\n" not in message


def test_train_refuses_device_cuda_without_a_gpu(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = kit_train(["--config", "smoke", f"output_dir={tmp_path}/x", "device=cuda"], tiny_model_dir, check=False)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("kit: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "asks for a GPU" in errors[0]
    assert not (tmp_path / "x" / "adapter").exists() and not (tmp_path / "x" / "metrics.jsonl").exists()
