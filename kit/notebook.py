"""What the Colab notebooks share, so that each of their cells stays one call into the kit.

`KIT_NOTEBOOK_SMOKE=1` is the smoke setting the test suite runs the notebooks in: the tiny test
model, the embedded synthetic catalog, a few steps, no Drive, no download, no GPU needed, and an
app that is built and closed instead of served. Without it the notebooks do the real thing.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kit.config import KitConfig, load_config

SMOKE = os.environ.get("KIT_NOTEBOOK_SMOKE") == "1"
# the smoke setting's sizes: seconds on 2 CPU cores, every stage still runs
SMOKE_OVERRIDES = ["grpo.max_steps=4", "grpo.save_steps=2", "priming.samples=8", "evaluation.samples=8",
                   "evaluation.max_new_tokens=24"]


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def require_gpu() -> str:
    """The GPU's name; a clear stop when the runtime has none (the smoke setting runs anywhere)."""
    import torch

    if SMOKE:
        return f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'} (smoke setting)"
    if not torch.cuda.is_available():
        raise SystemExit("No GPU in this runtime: Runtime > Change runtime type > T4 GPU (or better), then "
                         "Runtime > Run all. On CPU use `make demo` from a clone instead.")
    return torch.cuda.get_device_name(0)


def output_dir(name: str) -> Path:
    """Where a run writes: Google Drive when running in Colab (mounted here; a disconnect then costs
    nothing, the run resumes), else runs/NAME; the smoke setting writes under KIT_NOTEBOOK_OUT."""
    if SMOKE:
        return Path(os.environ.get("KIT_NOTEBOOK_OUT", "runs/notebook-smoke")) / name
    if in_colab():
        from google.colab import drive

        if not Path("/content/drive/MyDrive").is_dir():
            drive.mount("/content/drive")
        return Path("/content/drive/MyDrive/reczero") / name
    return Path("runs") / name


def recipe(name: str, overrides: list[str] | None = None) -> KitConfig:
    """The recipe with overrides, as on the command line; the smoke setting swaps in the smoke
    recipe (tiny model, synthetic catalog) and keeps the overrides that still apply to it."""
    overrides = list(overrides or [])
    if SMOKE:
        keep = [o for o in overrides if o.split("=", 1)[0] in ("output_dir", "name", "backend")
                or o.startswith(("priming.", "prompt.style", "data."))]
        keep = [o for o in keep if not o.startswith(("priming.samples", "priming.epochs"))]
        return load_config("smoke", SMOKE_OVERRIDES + keep)
    return load_config(name, overrides)


def live_reward_plot(out: Path, every_s: float = 20.0):
    """A callback that shows kit.plots.reward_curves of the run in one output, updated in place
    at most every `every_s` seconds and at the end of training."""
    from IPython.display import Image, display
    from transformers import TrainerCallback

    from kit.io import read_jsonl
    from kit.plots import reward_curves

    out = Path(out)
    handle = display("the reward curves appear after the first GRPO step", display_id=True)

    class RedrawRewards(TrainerCallback):
        last = 0.0

        def draw(self) -> None:
            png = out / "rewards.png"
            if reward_curves(read_jsonl(out / "metrics.jsonl"), png) and handle is not None:
                handle.update(Image(filename=str(png)))  # (None outside IPython: the file alone)
            self.last = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and time.time() - self.last >= every_s:
                self.draw()

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.draw()

    return RedrawRewards()


def show_markdown(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_image(path: str | Path) -> bool:
    """Show a PNG the kit wrote; False (and a line) when it is not there."""
    from IPython.display import Image, display

    path = Path(path)
    if not path.is_file():
        print(f"(no {path.name}: {path} was not written)")
        return False
    display(Image(filename=str(path)))
    return True


def serve_app(state: Any, share: bool = False):
    """The Gradio app in the notebook (Colab shows it in the output). The smoke setting builds it,
    checks that it answers, and closes it."""
    from kit.app import launch

    demo = launch(state, port=None, share=share, block=False)  # the first free port from 7860
    if in_colab() and not share:  # Colab's own proxy shows a port of the kernel's machine: no public link
        from google.colab import output

        output.serve_kernel_port_as_iframe(demo.server_port, height=900)
    if SMOKE:
        import urllib.request

        with urllib.request.urlopen(demo.local_url, timeout=30) as page:
            assert page.status == 200, f"the app answered {page.status}"
        demo.close()
        print("smoke setting: the app started, answered, and was closed")
    return demo


def cli(main, args: list[str]) -> None:
    """Run a kit command's main() with these arguments; a failure stops the notebook (Run all)
    instead of scrolling past (the command has printed why)."""
    code = main([str(a) for a in args])
    if code:
        raise SystemExit(f"{main.__module__} stopped (exit {code}): see its message above")


def api_key(name: str = "OPENAI_API_KEY") -> None:
    """Put a key in this process's environment without showing it: from Colab's secrets (the key
    icon on the left) when there, else asked for with getpass. It is never printed or written."""
    if os.environ.get(name):
        return
    value = None
    if in_colab():
        try:
            from google.colab import userdata

            value = userdata.get(name)
        except Exception:  # no such secret, or access not granted: ask instead
            value = None
    if not value:
        from getpass import getpass

        value = getpass(f"{name} (not shown, not stored): ")
    os.environ[name] = value


def reference_traces(cfg: KitConfig, path: str | Path, n: int = 16) -> Path:
    """Stand-in traces for the smoke setting, whose random model never answers in the format:
    the synthetic catalog's reference answers, judged by kit.traces' own rule (the right ones kept),
    written as kit.traces writes kept answers."""
    from transformers import AutoTokenizer

    from kit.data import load_task_data, to_prompt_dataset
    from kit.io import write_jsonl
    from kit.model_sources import resolve_model_source
    from kit.traces import data_rating_step, judge

    data = load_task_data(cfg)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(cfg.model.name))
    ds, _ = to_prompt_dataset(data.split("train", None, seed=cfg.seed), data, cfg, tokenizer, with_reference=True)
    step = data_rating_step(data)
    rows = []
    for ex in ds:
        answer = ex["completion"][0]["content"]
        if judge(answer, ex["rating"], data.scale, cfg.prompt.style, step) == "ok":
            rows.append({"prompt": ex["prompt"], "completion": answer, "rating": ex["rating"],
                         "user_id": ex["user_id"], "item_id": ex["item_id"],
                         "source": "teacher"})  # the catalog's reference answers play the teacher
        if len(rows) == n:
            break
    write_jsonl(path, rows)
    return Path(path)


def example_csv(folder: str | Path) -> tuple[Path, Path]:
    """(ratings.csv, products.csv) in a shape of one's own (reviewer, product, stars, time, text;
    product, name, genre, about), written from the embedded synthetic catalog: the smoke setting's
    stand-in for uploaded files."""
    import polars as pl

    from kit.data import load_task_data

    data = load_task_data(load_config("smoke"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ratings, products = folder / "ratings.csv", folder / "products.csv"
    data.interactions.select(reviewer="user_id", product="item_id", stars="rating", time="timestamp",
                             text="review").write_csv(ratings)
    pl.DataFrame([{"product": k, "name": v["title"], "genre": "|".join(v["categories"]), "about": v["description"]}
                  for k, v in data.items.items()]).write_csv(products)
    return ratings, products


def stats_table(prepared: str | Path) -> str:
    """The prepare report (stats.json) as a Markdown table."""
    import json

    stats = json.loads((Path(prepared) / "stats.json").read_text())
    rows = [("source", stats["source"]), ("rows read / kept", f"{stats['rows_read']:,} / {stats['rows_kept']:,}"),
            ("rows dropped", ", ".join(f"{k} {v:,}" for k, v in stats["rows_dropped"].items()) or "none"),
            ("users / items", f"{stats['users']:,} / {stats['items']:,}"),
            ("items without metadata", f"{stats['items_without_metadata']:,}"),
            ("targets dropped", ", ".join(f"{k} {v:,}" for k, v in stats["targets_dropped"].items() if v) or "none"),
            ("samples train / valid / test", " / ".join(f"{stats['samples'][k]:,}" for k in ("train", "valid", "test"))),
            ("ratings", ", ".join(f"{k}: {v:,}" for k, v in stats["rating_histogram"].items()))]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
