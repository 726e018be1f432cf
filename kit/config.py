"""Typed recipes: YAML files under templates/recipes/ plus `key=value` overrides.

Every error is one line naming the field and the fix. The GRPO checks that usually
surface an hour into a run (batch divisibility, LoRA rank, sequence budget, scale)
run here, before any model loads.
"""
from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kit.paths import RECIPES_DIR


class ConfigError(ValueError):
    """A recipe or an override is wrong; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Strict):
    n_users: int = Field(200, ge=2)
    n_items: int = Field(150, ge=2)
    interactions_per_user: int = Field(20, ge=3)
    noise: float = Field(0.5, ge=0.0, description="std of the Gaussian noise on the latent score (1-5 units)")
    seed: int = 0
    scale: tuple[int, int] = Field((1, 5), description="the ratings' scale, e.g. [1, 10]: the data owns it")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.scale[0] < self.scale[1]:
            raise ValueError(f"data.synthetic.scale: {self.scale[0]} must be below {self.scale[1]}, e.g. [1, 10]")
        return self


def _pair_of_numbers(value: Any) -> Any:
    """'1,5' (as typed on a command line) -> (1.0, 5.0); lists and tuples pass as they are."""
    if isinstance(value, str):
        try:
            low, high = (float(x) for x in value.split(","))
        except ValueError:
            raise ValueError(f"takes two numbers like 1,5 (got {value!r})") from None
        return low, high
    return value


class PrepareOptions(_Strict):
    """What `python -m kit.data prepare` does, defined once: its command-line options are derived
    from these fields (a field `max_train` is the option `--max-train`, unless `flag` names
    another), and a recipe embeds the same model as `data.prepare`."""

    source: str = Field(..., description="the data set's format (see kit.data.registry)")
    path: str = Field(..., description="the downloaded folder, or the reviews/ratings file")
    out: str = Field(..., description="the prepared data folder to write")
    items_path: Optional[str] = Field(None, description="the items/meta file, when --path is a file",
                                      json_schema_extra={"flag": "--items"})
    history: int = Field(10, ge=1, description="N: the user's last N earlier interactions (paper: 10)")
    item_history: Optional[int] = Field(None, ge=0, description="the item's last N by others (default: --history)")
    min_history: int = Field(5, ge=0, description="drop targets with fewer history entries in total")
    kcore: int = Field(0, ge=0, description="keep users and items with >= k interactions (0: off)")
    split: Literal["loo", "time"] = Field(
        "loo", description="loo: per-user leave-last-out (valid = 2nd last, test = last); time: global time cut")
    time_cut: tuple[float, float] = Field((0.8, 0.9), description="quantiles of target time for valid and test starts")
    max_train: Optional[int] = Field(None, ge=1, description="at most this many train samples (seeded pick)")
    max_valid: Optional[int] = Field(None, ge=1, description="at most this many valid samples (seeded pick)")
    max_test: Optional[int] = Field(None, ge=1, description="at most this many test samples (seeded pick)")
    seed: int = Field(0, description="seed of the capped picks")
    categories: list[str] = Field([], description="comma-separated item categories to keep")
    scale: Optional[tuple[float, float]] = Field(None, description="rating scale, e.g. 1,5 or 1,10 (default: the source's)")
    review_chars: int = Field(400, ge=0, description="review texts are cut to this many characters")
    description_chars: int = Field(400, ge=0, description="item descriptions are cut to this many characters")
    strict: bool = Field(False, description="stop at the first bad line (file, line, field)")
    mapping: dict[str, str] = Field({}, description="csv/jsonl: canonical=column pairs, e.g. user_id=reviewer,rating=stars",
                                    json_schema_extra={"flag": "--map"})
    item_mapping: dict[str, str] = Field({}, description="csv/jsonl items: item_id=...,title=...,categories=...",
                                         json_schema_extra={"flag": "--item-map"})
    time_unit: Literal["s", "ms", "iso"] = Field("s", description="csv/jsonl: unit of the timestamp column")
    engine: Literal["auto", "lines"] = Field(
        "auto", description="auto: the columnar fast path where the source has one; lines: always line by line")

    @field_validator("time_cut", "scale", mode="before")
    @classmethod
    def _pair(cls, value):
        return _pair_of_numbers(value)

    @field_validator("categories", mode="before")
    @classmethod
    def _categories(cls, value):
        return [c.strip() for c in value.split(",") if c.strip()] if isinstance(value, str) else value

    @field_validator("mapping", "item_mapping", mode="before")
    @classmethod
    def _mapping(cls, value):
        if not isinstance(value, str):
            return value
        out = {}
        for part in (p.strip() for p in value.split(",")):
            if part and "=" not in part:
                raise ValueError(f"'{part}' must look like canonical=source_column (e.g. user_id=reviewer)")
            if part:
                key, column = (x.strip() for x in part.split("=", 1))
                out[key] = column
        return out

    @field_validator("time_cut", "scale", mode="after")
    @classmethod
    def _ordered(cls, pair):
        if pair is not None and not pair[0] < pair[1]:
            raise ValueError(f"{pair[0]:g} must be below {pair[1]:g}")
        return pair


class AutoPrepare(PrepareOptions):
    """Download and prepare a real data set on first use (when data.path does not exist yet): the
    prepare options themselves, plus what to download. path and out follow from raw_dir/category
    and data.path."""

    source: str = Field("amazon2023", description="a source with a download helper (see kit.data.registry)")
    path: Optional[str] = Field(None, description="default: raw_dir/category")
    out: Optional[str] = Field(None, description="default: data.path")
    category: str = Field("Digital_Music", description="an Amazon Reviews 2023 category")
    raw_dir: str = Field("data/raw", description="where the downloaded files go")
    kcore: int = Field(5, ge=0, description="keep users and items with >= k interactions (0: off)")


class DataConfig(_Strict):
    source: Literal["synthetic", "prepared"] = "synthetic"
    path: Optional[str] = Field(None, description="prepared data folder (source: prepared)")
    prepare: Optional[AutoPrepare] = Field(None, description="download + prepare into data.path on first use; "
                                           "its history/min_history/... decide the prepared samples")
    synthetic: SyntheticConfig = SyntheticConfig()
    history_user: int = Field(10, ge=1, description="synthetic data: N, the user's last N earlier interactions")
    history_item: int = Field(10, ge=0, description="synthetic data: N, the item's last N earlier interactions by others")
    min_history: int = Field(5, ge=0, description="synthetic data: drop targets with fewer history entries in total")
    review_chars: int = Field(400, ge=0)
    description_chars: int = Field(400, ge=0)
    max_train: Optional[int] = Field(None, ge=1)
    max_eval: Optional[int] = Field(None, ge=1, description="unused (evaluation.samples sets the pairs); "
                                    "accepted so that run folders written before it was dropped still load")
    eval_split: Literal["valid", "test"] = "valid"
    seed: int = 0

    @model_validator(mode="after")
    def _path_needed(self):
        if self.source == "prepared" and not self.path:
            raise ValueError("data.path is required when data.source is 'prepared' (the folder kit.data prepare wrote)")
        if self.prepare is not None and self.prepare.out not in (None, self.path):
            raise ValueError(f"data.prepare.out ({self.prepare.out}) differs from data.path ({self.path}): "
                             "leave data.prepare.out out, data.path is where prepared data goes")
        return self


class ScaleConfig(_Strict):
    """A check on the data's scale (the data owns it: data.synthetic.scale or meta.json)."""

    min: Optional[float] = Field(None, description="None: not checked")
    max: Optional[float] = Field(None, description="None: not checked")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"rating_scale.min ({self.min:g}) must be below rating_scale.max ({self.max:g})")
        return self


class LoraConfig(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ModelConfig(_Strict):
    name: str = Field("smollm2-135m", description="'smollm2-135m' (offline, bundled), a local folder or a hub id")
    max_seq_length: int = Field(2048, ge=64)
    load_in_4bit: bool = False
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "auto"
    fast_inference: Literal["auto", "on", "off"] = Field("auto", description="vLLM generation: auto = when a GPU and vLLM exist")
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=0.95)
    max_lora_rank: int = Field(16, ge=1)
    gradient_checkpointing: bool = True
    lora: LoraConfig = LoraConfig()

    @field_validator("fast_inference", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        return {True: "on", False: "off"}[value] if isinstance(value, bool) else value  # YAML reads on/off as booleans

    @model_validator(mode="after")
    def _rank(self):
        if self.max_lora_rank < self.lora.r:
            raise ValueError(f"model.max_lora_rank ({self.max_lora_rank}) must be >= model.lora.r ({self.lora.r}): "
                             f"set model.max_lora_rank={self.lora.r}")
        return self


class PromptConfig(_Strict):
    style: Literal["reczero", "think_answer", "answer_only"] = "reczero"
    template: Literal["full", "compact"] = Field(
        "full", description="full: the paper's user message (every field of every item, the item's recent reviews); "
        "compact: the target first, then only the user's own reviews (for data whose reviews state the tastes)")
    max_prompt_tokens: int = Field(1536, ge=32, description="prompts longer than this are dropped, and counted")


class PrimingConfig(_Strict):
    """Supervised 'format priming' on reference answers before GRPO (RecOne-style cold start)."""

    enabled: bool = False
    samples: int = Field(100, ge=1)
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    traces: Optional[str] = Field(None, description="JSONL of {prompt/messages, completion} traces; default: synthetic reference answers")
    keep: Literal["all", "correct"] = Field(
        "all", description="synthetic reference answers: all of them, or (RecOne's rejection sampling) only those "
                           "whose rating equals the truth; `samples` counts the answers kept")


class GRPOSettings(_Strict):
    max_steps: int = Field(100, ge=1)
    learning_rate: float = Field(5e-6, gt=0)
    lr_scheduler_type: str = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = "adamw_torch"
    num_generations: int = Field(4, ge=2)
    per_device_train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    generation_batch_size: Optional[int] = Field(None, ge=1, description="default: batch x accumulation")
    max_completion_length: int = Field(256, ge=8)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    beta: float = Field(0.0, ge=0, description="KL coefficient; the paper uses none")
    epsilon: float = Field(0.2, gt=0, description="lower clip bound of the policy ratio: 1 - epsilon")
    epsilon_high: Optional[float] = Field(
        0.28, gt=0, description="upper clip bound: 1 + epsilon_high (DAPO's clip-higher, 0.28, keeps rare tokens "
                                "learnable); None = epsilon (symmetric clipping). Set explicitly on every device: "
                                "Unsloth on a GPU would otherwise put 0.28 where plain TRL on CPU clips at epsilon")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="advantages divided by the group's reward spread (group), the batch's (batch), or "
                             "not at all (none: a small reward gap stays a small step)")
    zero_variance: Literal["keep", "skip"] = Field(
        "skip", description="groups whose answers all earn the same reward: skip = out of the loss, and a new "
                            "batch of prompts drawn when none is left (kit.zero_variance); keep = TRL's behaviour")
    max_redraws: int = Field(2, ge=0, description="zero_variance=skip: new batches drawn at most per step")
    num_iterations: int = Field(1, ge=1)
    mask_truncated_completions: bool = False
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    log_completions_every: int = Field(10, ge=1, description="print sample completions every N steps")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="backend=trl with vLLM: 'colocate' (an engine inside each training process) or "
                                "'server' (`trl vllm-serve` on GPUs of its own, at vllm_server_url)")
    vllm_server_url: str = Field("http://localhost:8000", description="backend=trl, vllm_mode=server: the server")

    @model_validator(mode="after")
    def _divides(self):
        effective = self.per_device_train_batch_size * self.gradient_accumulation_steps
        gen = self.generation_batch_size or effective
        if gen % self.num_generations:
            raise ValueError(
                f"grpo.num_generations ({self.num_generations}) must divide the generation batch "
                f"({gen} = grpo.generation_batch_size, or per_device_train_batch_size x gradient_accumulation_steps): "
                f"e.g. set grpo.per_device_train_batch_size={self.num_generations}")
        if self.generation_batch_size and self.generation_batch_size % effective:
            raise ValueError(f"grpo.generation_batch_size ({gen}) must be a multiple of per_device_train_batch_size x "
                             f"gradient_accumulation_steps ({effective})")
        return self


class RewardSpec(_Strict):
    name: str = Field(..., description="a name from kit.rewards.REWARDS, 'pkg.mod:fn' or 'file.py:fn'")
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict, description="the reward function's settings, "
                                   "e.g. {hit: 2.0, miss: -1.5} for exact_match; checked against its signature")


class EvalConfig(_Strict):
    enabled: bool = True
    samples: int = Field(32, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)
    before_training: bool = True
    before_samples: Optional[int] = Field(
        None, ge=1, description="score the base model on only the first N of the evaluation pairs (a small model "
                                "writes no valid answer before training, so more pairs only cost time); null: all")
    decode: Literal["greedy", "expected", "mean_of_n"] = Field(
        "greedy", description="the model's prediction: the rating it wrote (greedy), the expected rating of its "
        "distribution after the rating tag (expected), or the mean of n sampled answers (mean_of_n: "
        "kit.evaluate --answers N --temperature T); every one computed is reported")
    rating_distribution: bool = Field(True, description="read each greedy answer's rating distribution after the "
                                      "rating tag (one forward pass per answer): expected-rating decoding and "
                                      "calibration")

    @model_validator(mode="after")
    def _decode(self):
        if self.decode == "expected" and not self.rating_distribution:
            raise ValueError("evaluation.decode=expected needs evaluation.rating_distribution=true")
        return self


class BudgetConfig(_Strict):
    """A wall-clock budget for the whole run (kit.budget): the recipe's sizes become upper bounds."""

    minutes: Optional[float] = Field(None, gt=0, description="fit the run into this many minutes "
                                     "(shrinking priming steps, GRPO steps and evaluation pairs, each said); "
                                     "null: run the recipe's sizes as they are")
    min_eval_pairs: int = Field(8, ge=1, description="never evaluate on fewer pairs than this (or the recipe's)")
    min_grpo_steps: int = Field(2, ge=1, description="never fewer GRPO steps than this (or the recipe's)")
    min_priming_epochs: float = Field(1.0, gt=0, description="never fewer priming epochs than this (or the recipe's)")


class KitConfig(_Strict):
    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["unsloth", "trl"] = Field(
        "unsloth", description="'unsloth': one GPU or a CPU, Unsloth's loader and kernels; 'trl': plain "
                               "transformers + peft (+ bitsandbytes for 4-bit) under `accelerate launch`, any number "
                               "of processes, no unsloth import (see README, 'More than one GPU')")
    data: DataConfig = DataConfig()
    rating_scale: Optional[ScaleConfig] = Field(
        None, description="only a check: the run stops when the data's scale differs (None: take the data's)")
    model: ModelConfig = ModelConfig()
    prompt: PromptConfig = PromptConfig()
    priming: PrimingConfig = PrimingConfig()
    grpo: GRPOSettings = GRPOSettings()
    rewards: list[RewardSpec] = [RewardSpec(name="format"), RewardSpec(name="rating")]
    evaluation: EvalConfig = EvalConfig()
    budget: BudgetConfig = BudgetConfig()
    resolved: dict[str, Any] = Field(default_factory=dict, description="written by kit.train: what 'auto' "
                                     "settings became on the machine that ran it, and why (read back, never used)")

    @model_validator(mode="after")
    def _budget(self):
        need = self.prompt.max_prompt_tokens + self.grpo.max_completion_length
        if need > self.model.max_seq_length:
            raise ValueError(
                f"prompt.max_prompt_tokens ({self.prompt.max_prompt_tokens}) + grpo.max_completion_length "
                f"({self.grpo.max_completion_length}) = {need} exceeds model.max_seq_length ({self.model.max_seq_length}): "
                "raise model.max_seq_length or shorten one of them")
        if self.evaluation.max_new_tokens >= self.model.max_seq_length:
            raise ValueError(
                f"evaluation.max_new_tokens ({self.evaluation.max_new_tokens}) leaves no room for a prompt within "
                f"model.max_seq_length ({self.model.max_seq_length}): lower it or raise model.max_seq_length")
        d, r = self.data, self.rating_scale
        if r is not None and d.source == "synthetic":
            check_scale((r.min, r.max), d.synthetic.scale, "data.synthetic.scale")
        if not self.rewards:
            raise ValueError("rewards: name at least one reward, e.g. [{name: format}, {name: rating}]")
        return self


def check_scale(recipe: tuple[float | None, float | None], data: tuple[float, float], where: str) -> None:
    """`rating_scale` in a recipe is only a check against the data's own scale (None: not checked)."""
    if any(r is not None and float(r) != float(x) for r, x in zip(recipe, data)):
        shown = "-".join("?" if r is None else f"{r:g}" for r in recipe)
        raise ConfigError(f"rating_scale {shown} in the recipe disagrees with the data's scale "
                          f"{data[0]:g}-{data[1]:g} ({where}): remove rating_scale or fix it")


# --------------------------------------------------------------------------- loading

def _parse_value(raw: str) -> Any:
    """`key=value` values are YAML scalars/lists: 3, 1e-4, true, null, [a, b]."""
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        inner = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(inner) == 1:  # Optional[Section]
            ann = inner[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _suggest(key: str, known: list[str]) -> str:
    """' (did you mean ...?)' with the closest known keys: the whole path first, then the last part."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:
        leaf = key.split(".")[-1]
        close = [k for k in known if k.split(".")[-1] in difflib.get_close_matches(
            leaf, {k.split(".")[-1] for k in known}, n=2, cutoff=0.75)][:3]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.c=value` inside a nested dict, refusing keys the schema does not know."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key=value (e.g. grpo.max_steps=10)")
    key, raw = override.split("=", 1)
    key = key.strip()
    known = _known_keys(KitConfig)
    if key not in known and not any(k.startswith(key + ".") for k in known):
        raise ConfigError(f"unknown config key '{key}'{_suggest(key, known)}")
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    node[parts[-1]] = _parse_value(raw)


def check_overrides(overrides: list[str] | None) -> None:
    """Refuse unknown keys and malformed `key=value` before a recipe is even chosen."""
    for item in overrides or []:
        apply_override({}, item)


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        hint = _suggest(loc, _known_keys(KitConfig)) or " (remove it or check the spelling)"
        return f"{source}: unknown config key '{loc}'{hint}"
    if "input" in first and first["type"] != "value_error":
        return f"{source}: {loc} = {first['input']!r}: {msg}"
    return f"{source}: {loc}: {msg}"


def resolve_recipe(path_or_name: str) -> Path:
    """A recipe path, or a bare name looked up in templates/recipes/ (`smoke` -> smoke.yaml)."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    for candidate in (RECIPES_DIR / path_or_name, RECIPES_DIR / f"{path_or_name}.yaml"):
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(x.stem for x in RECIPES_DIR.glob("*.yaml")))
    raise ConfigError(f"recipe '{path_or_name}' not found (a YAML path, or one of: {names})")


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> KitConfig:
    """Read a recipe (or the defaults), apply overrides, validate."""
    tree: dict = {}
    source = "defaults"
    if recipe is not None:
        path = resolve_recipe(str(recipe))
        source = str(path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a recipe must be a YAML mapping of sections")
    tree = copy.deepcopy(tree)
    for item in overrides or []:
        apply_override(tree, item)
    try:
        return KitConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source + (" + overrides" if overrides else ""))) from None


def dump_config(cfg: KitConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_for_run(run: str | Path | None, recipe: str | None, overrides: list[str] | None = None,
                   data_dir: str | None = None, default_recipe: str | None = None,
                   use_defaults: bool = False) -> tuple[KitConfig, Path | None]:
    """The config of a run folder (or of a recipe, or of the kit's defaults with `use_defaults`),
    with overrides; `data_dir` points it at a prepared data folder (python -m kit.data prepare).
    Returns (config, run folder or None)."""
    run_dir = Path(run) if run else None
    if run_dir is not None and not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}/config.yaml not found: --run takes a folder written by kit.train")
    source = str(run_dir / "config.yaml") if run_dir else (recipe or default_recipe)
    if source is None and not use_defaults:
        raise ConfigError("say what to use: --run RUN_DIR, or --config RECIPE")
    extra = list(overrides or [])
    if data_dir:
        extra += ["data.source=prepared", f"data.path={data_dir}", "data.prepare=null"]
    return load_config(source, extra), run_dir
