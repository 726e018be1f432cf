"""Recipes validate into typed configs; mistakes give one clear line before any model loads."""
from __future__ import annotations

import pytest

from kit.config import ConfigError, KitConfig, load_config
from kit.paths import RECIPES_DIR


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_every_shipped_recipe_validates(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, KitConfig) and cfg.name


def test_required_recipes_exist():
    names = {p.stem for p in RECIPES_DIR.glob("*.yaml")}
    assert {"smoke", "cpu-demo", "gpu-16gb", "gpu-24gb", "recone-cpu", "recone-gpu"} <= names


def test_overrides_are_typed_and_nested():
    cfg = load_config("smoke", ["grpo.max_steps=7", "grpo.learning_rate=3e-5", "model.lora.target_modules=[q_proj, v_proj]",
                                "data.max_train=null", "output_dir=/tmp/x"])
    assert cfg.grpo.max_steps == 7 and cfg.grpo.learning_rate == 3e-5
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.max_train is None and cfg.output_dir == "/tmp/x"


@pytest.mark.parametrize("overrides,message", [
    (["grpo.max_stepz=3"], "unknown config key 'grpo.max_stepz'"),
    (["max_steps=3"], "did you mean grpo.max_steps"),
    (["grpo.max_steps"], "must look like key=value"),
    (["grpo.max_steps=ten"], "grpo.max_steps = 'ten'"),
    (["grpo.num_generations=3"], "grpo.num_generations (3) must divide the generation batch (4"),
    (["model.lora.r=64"], "model.max_lora_rank (8) must be >= model.lora.r (64)"),
    (["grpo.max_completion_length=512"], "exceeds model.max_seq_length (1024)"),
    (["rating_scale.min=5", "rating_scale.max=1"], "rating_scale.min (5) must be below rating_scale.max (1)"),
    (["grpo.loss_type=ppo"], "grpo.loss_type"),
    (["rewards=[]"], "name at least one reward"),
])
def test_classic_mistakes_are_caught(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_unknown_key_in_a_recipe_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrpo:\n  max_steps: 3\n  lerning_rate: 1e-5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'grpo.lerning_rate'"):
        load_config(str(bad))


def test_broken_yaml_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ngrpo:\n  max_steps: [3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+: not valid YAML"):
        load_config(str(bad))


def test_missing_recipe_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="cpu-demo"):
        load_config("no-such-recipe")


def test_generation_batch_must_be_multiple_of_batch():
    with pytest.raises(ConfigError, match="multiple of per_device_train_batch_size"):
        load_config("smoke", ["grpo.generation_batch_size=6", "grpo.num_generations=2"])
    cfg = load_config("smoke", ["grpo.generation_batch_size=8"])
    assert cfg.grpo.generation_batch_size == 8


@pytest.mark.parametrize("override,suggested", [
    ("grpo.max_step=5", "grpo.max_steps"),
    ("grpo.learnin_rate=1e-5", "grpo.learning_rate"),
    ("evaluation.max_new_token=8", "evaluation.max_new_tokens"),
])
def test_a_mistyped_key_names_the_closest_one(override, suggested):
    with pytest.raises(ConfigError, match=rf"did you mean {suggested}\b"):
        load_config("smoke", [override])


def test_a_mistyped_key_in_a_recipe_names_the_closest_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  max_step: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'grpo.max_step' \(did you mean grpo.max_steps"):
        load_config(str(bad))


_ENTRY_WITH_A_TYPO = """
import sys
from kit.{module} import main
code = main([{args}"grpo.max_step=5"])
print("unsloth" in sys.modules, "torch" in sys.modules, code)
"""


@pytest.mark.parametrize("module,args", [("train", '"--config", "smoke", '), ("train", ""),
                                         ("evaluate", '"--config", "smoke", '), ("app", '"--config", "smoke", ')])
def test_a_config_typo_is_reported_before_any_heavy_import(module, args):
    import subprocess
    import sys

    from kit.paths import REPO_ROOT

    proc = subprocess.run([sys.executable, "-c", _ENTRY_WITH_A_TYPO.format(module=module, args=args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["False", "False", "2"], proc.stdout + proc.stderr[-2000:]
    assert "unknown config key 'grpo.max_step' (did you mean grpo.max_steps" in proc.stderr


def test_rating_scale_is_only_a_check_on_the_datas_scale(tmp_path):
    from kit.data import load_task_data
    from kit.data.prepare import PrepareOptions, prepare
    from tests import data_fixtures as F

    from kit.data import sample_messages, to_prompt_dataset

    cfg = load_config("smoke", ["data.synthetic.scale=[1, 10]"])
    data = load_task_data(cfg)
    assert cfg.rating_scale is None and data.scale == (1.0, 10.0)
    frame = data.splits["train"].head(4)
    assert "from 1 to 10" in sample_messages(frame.row(0, named=True), data, cfg)[0]["content"]
    rows, _ = to_prompt_dataset(frame, data, cfg)  # what the rewards read the scale from
    assert set(rows["rating_min"]) == {1.0} and set(rows["rating_max"]) == {10.0}
    assert load_config("smoke", ["data.synthetic.scale=[1, 10]", "rating_scale.max=10"]).rating_scale.max == 10
    with pytest.raises(ConfigError, match=r"rating_scale \?-10 in the recipe disagrees with the data's scale 1-5 "
                                          r"\(data.synthetic.scale\)"):
        load_config("smoke", ["rating_scale.max=10"])
    out = tmp_path / "prepared"
    prepare(PrepareOptions(source="amazon2023", path=str(F.amazon2023(tmp_path / "raw")), out=str(out), history=2,
                           min_history=1), log=lambda *_: None)
    prepared = ["data.source=prepared", f"data.path={out}"]
    assert load_task_data(load_config("smoke", prepared)).scale == (1.0, 5.0)
    with pytest.raises(ConfigError, match=rf"rating_scale 1-10 in the recipe disagrees with the data's scale 1-5 "
                                          rf"\({out}/meta.json\)"):
        load_task_data(load_config("smoke", [*prepared, "rating_scale.min=1", "rating_scale.max=10"]))


def test_a_run_folder_written_with_the_dropped_max_eval_still_loads():
    """data.max_eval was never read; run folders whose config.yaml holds it must still load (evaluate, app, resume)."""
    assert load_config("cpu-demo", ["data.max_eval=32"]).data.max_eval == 32
