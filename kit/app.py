"""`python -m kit.app [--run RUN_DIR | --config RECIPE] [--data PREPARED_DIR] [--host 127.0.0.1] [--port 7860]`

A Gradio app to see why the model rates as it does: pick a user and an item, read the
user's history and the item's recent reviews, generate (streaming), and read the four
stages as separate panels, the rating beside the truth and the averages, the reward
breakdown, and the raw completion and prompt. Base model vs fine-tuned adapter side by
side (one base in memory, the adapter switched on and off), optionally n sampled answers with
the spread of predicted ratings.

Safe by default: binds 127.0.0.1, no share link unless --share, serves no files, unknown
ids get a message (not a traceback), input sizes are capped.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from kit.config import ConfigError, KitConfig, config_for_run
from kit.data import FittedPrompt, TaskData, fit_prompt, load_task_data
from kit.prompts import clip
from kit.evaluate import ratings_of_answers
from kit.rewards import RecipeReward, is_consistent, load_recipe_rewards, match_result, parse_answer, reward_breakdown

MAX_NEW_TOKENS = 1024
MAX_ANSWERS = 8
MAX_QUERY = 200
SPLITS = ("test", "valid", "train")


class AppInputError(ValueError):
    """Bad input from the page: shown as a message, never as a traceback."""


@dataclass
class AppState:
    cfg: KitConfig
    data: TaskData
    loaded: Any = None                 # kit.model.LoadedModel, loaded on first use
    adapter_dir: str | None = None
    rewards: list[RecipeReward] | None = None  # the recipe's rewards, weights and kwargs: what training used
    run_dir: Path | None = None
    _samples: dict | None = None
    _by_user: dict | None = None

    def samples(self) -> dict[tuple[str, str], tuple[str, dict]]:
        """(user, item) -> (split, sample) for every sample of every split."""
        if self._samples is None:
            self._samples = {}
            for split in reversed(SPLITS):  # test wins over valid over train
                for row in self.data.splits[split].iter_rows(named=True):
                    self._samples[(row["user_id"], row["item_id"])] = (split, row)
        return self._samples

    def targets_by_user(self) -> dict[str, list[tuple[str, str]]]:
        """user -> [(split, item)], built once: page events must not scan every sample."""
        if self._by_user is None:
            self._by_user = {}
            for (u, i), (split, _) in self.samples().items():
                self._by_user.setdefault(u, []).append((split, i))
        return self._by_user

    def model(self):
        if self.loaded is None:
            from kit.model import load_adapter

            self.loaded = load_adapter(self.cfg.model, self.adapter_dir, device=self.cfg.device)
        return self.loaded


def build_state(run: str | None = None, config: str | None = None, overrides: list[str] | None = None,
                data_dir: str | None = None) -> AppState:
    cfg, run_dir = config_for_run(run, config, overrides, data_dir, default_recipe="cpu-demo")
    from kit.backend import select_backend

    select_backend(cfg.backend)  # unsloth before transformers/peft when it is the backend, once the config is good

    adapter = str(run_dir / "adapter") if run_dir and (run_dir / "adapter" / "adapter_config.json").is_file() else None
    return AppState(cfg=cfg, data=load_task_data(cfg), adapter_dir=adapter, rewards=load_recipe_rewards(cfg.rewards),
                    run_dir=run_dir)


def run_scores(run_dir: Path | None) -> str:
    """The run's held-out figures as its training summary and kit.evaluate wrote them (intervals,
    paired verdicts), so the answers on screen can be read against how the model does overall."""
    if run_dir is None:
        return "_No run folder: start the app with --run RUN_DIR to see its held-out figures._"
    from kit.ending import verdict
    from kit.report import metrics_table
    from kit.train import format_summary

    parts = []
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        parts += ["**Training summary** (the run's own evaluation rounds)", format_summary(s), "", verdict(s)]
    for path in sorted((run_dir / "eval").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        parts += ["", f"**kit.evaluate on {path.parent.name}**", "",
                  metrics_table({"this model": m, **{f"baseline: {k}": v for k, v in m.get("baselines", {}).items()}})]
    return "\n".join(parts) if parts else f"_{run_dir} has no summary.json or eval/*/metrics.json yet._"


# --------------------------------------------------------------------------- data views

def user_choices(state: AppState, query: str = "", limit: int = 200) -> list[str]:
    query = (query or "")[:MAX_QUERY].lower()
    return [u for u in sorted(state.targets_by_user()) if query in u.lower()][:limit]


def item_choices(state: AppState, user_id: str) -> list[str]:
    """The user's targets (test first), labelled with split and title."""
    check_user(state, user_id)
    targets = sorted(state.targets_by_user()[user_id], key=lambda t: (SPLITS.index(t[0]), t[1]))
    return [f"{i} | {split} | {state.data.items.get(i, {}).get('title', '?')}" for split, i in targets]


def parse_item_choice(choice: str) -> str:
    return (choice or "").split(" | ")[0].strip()[:MAX_QUERY]


def check_user(state: AppState, user_id: str) -> None:
    if not user_id or user_id not in state.targets_by_user():
        raise AppInputError(f"unknown user id {str(user_id)[:40]!r}: pick one from the list")


def get_sample(state: AppState, user_id: str, item_id: str) -> dict:
    """The sample for a (user, item) target; for any other item, a sample 'as of now'."""
    check_user(state, user_id)
    found = state.samples().get((user_id, item_id))
    if found is not None:
        return state.data.with_reviews(found[1])
    if item_id not in state.data.items:
        raise AppInputError(f"unknown item id {str(item_id)[:40]!r}: pick one from the list or type a known id")
    return adhoc_sample(state, user_id, item_id)


def adhoc_sample(state: AppState, user_id: str, item_id: str) -> dict:
    """Any item for a user, as of now (kit.data.samples.sample_as_of, which kit.predict uses too):
    the true rating is shown only if the user rated the item."""
    from kit.data.samples import sample_as_of

    d = state.cfg.data
    sample = sample_as_of(state.data.interactions, user_id, item_id, None, d.history_user, d.history_item)
    if sample is None:
        raise AppInputError(f"no earlier ratings by user {user_id} or of item {item_id} to reason from: pick another")
    return sample


def _date(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d")


def history_table(state: AppState, sample: dict) -> pl.DataFrame:
    rows = [{"item": state.data.items.get(h["item_id"], {}).get("title", h["item_id"]), "rating": h["rating"],
             "review": clip(h["review"], 120), "date": _date(h["timestamp"])} for h in sample["user_history"]]
    return pl.DataFrame(rows, schema={"item": pl.Utf8, "rating": pl.Float64, "review": pl.Utf8, "date": pl.Utf8})


def item_markdown(state: AppState, sample: dict) -> str:
    it = state.data.items.get(sample["item_id"], {})
    lines = [f"### {html.escape(clip(it.get('title', sample['item_id']), 160))}"]
    for label, key in (("Category", "categories"), ("Features", "features")):
        if it.get(key):
            lines.append(f"**{label}:** {html.escape(clip(', '.join(it[key]), 300))}")
    if it.get("description"):
        lines.append(html.escape(clip(it["description"], 400)))
    lines.append(f"**Average rating before this target:** {sample['item_avg']:.2f} over {sample['item_count']} ratings")
    lines.append("**Recent reviews by others:**")
    lines += [f"- {h['rating']:.1f} ({_date(h['timestamp'])}): {html.escape(clip(h['review'], 160))}"
              for h in sample["item_history"]] or ["- none"]
    return "\n\n".join(lines)


def truth_markdown(sample: dict) -> str:
    truth = "unknown (not rated by this user)" if sample["rating"] is None else f"{sample['rating']:g}"
    return (f"**True rating:** {truth} &nbsp; · &nbsp; **user average (earlier):** {sample['user_avg']:.2f}"
            f" &nbsp; · &nbsp; **item average (earlier):** {sample['item_avg']:.2f}")


# --------------------------------------------------------------------------- answers

def answer_panels(text: str, sample: dict, scale: tuple[float, float], rewards: list[RecipeReward],
                  style: str = "reczero", evidence: str | None = None) -> dict[str, str]:
    """The four stages as markdown panels, the rating card, the recipe's reward breakdown
    (each reward, its weight, the weighted total training optimised), what is wrong. With the
    prompt as `evidence`, each claimed aspect is marked found in it or not (kit.grounding)."""
    from kit.grounding import check_claims, item_claim

    parsed = parse_answer(text, scale, style)
    sec = parsed.sections
    item_lines = [ln.strip() for ln in sec.get("analyze item", "").splitlines() if ln.strip()]
    marked = {ln: item_claim(ln) for ln in item_lines}
    pos = [ln for ln, c in marked.items() if c and c[0] == "pos"]
    neg = [ln for ln, c in marked.items() if c and c[0] == "neg"]
    other = [ln for ln, c in marked.items() if c is None]
    esc = html.escape
    claims = check_claims(text, evidence, style) if evidence else []
    marks = {(c.kind, c.text): c.supported for c in claims}

    def line(ln: str) -> str:
        if ln not in marked:
            return f"- {esc(ln)}"
        kind, aspect, quotes = marked[ln]
        shown = ln[5:].strip() if ln.lower().startswith(f"[{kind}]") else ln.lstrip("-*• ")
        checks = [marks.get((kind, aspect)), *(marks.get(("quote", q)) for q in quotes)]
        if any(c is None for c in checks):
            return f"- {esc(shown)}"
        ok = all(checks)
        return f"- {esc(shown)}" + (" ✓ _in the prompt_" if ok else " ✗ _not in the prompt_")

    item_md = "\n".join([esc(x.lstrip("-*• ")) for x in other] + ["", "**Likely to like**"]
                        + [line(p) for p in pos or ["(none)"]]
                        + ["", "**Likely to dislike**"] + [line(n) for n in neg or ["(none)"]])
    if claims:
        found = sum(c.supported for c in claims)
        item_md += (f"\n\n_Grounded: {found} of {len(claims)} claims (aspects and preferences) occur in the "
                    "prompt._")
    truth = sample["rating"]
    if parsed.valid and truth is None:
        verdict = f"<div class='kit-rating'>{parsed.rating:g}</div><div>predicted (no true rating)</div>"
    elif parsed.valid:
        verdict = f"<div class='kit-rating'>{parsed.rating:g}</div><div>predicted, true {truth:g}, " \
                  f"error {abs(parsed.rating - truth):.2f}</div>"
    else:
        verdict = "<div class='kit-rating kit-bad'>malformed</div><div>" + "<br>".join(
            esc(p) for p in parsed.problems[:6]) + "</div>"
    b = reward_breakdown(rewards, text, rating=[sample["rating"]], rating_min=[scale[0]], rating_max=[scale[1]],
                         prompts=[evidence or ""])
    table = "\n".join(["| reward | weight | value |", "|---|---|---|"] +
                      [f"| {name} | {b['weights'][name]:g} | {v:+.3f} |" for name, v in b["rewards"].items()] +
                      [f"| weighted total | | {b['total']:+.3f} |"])
    agrees = is_consistent(parsed, scale)
    match_md = esc(sec.get("match", "")) or "_(missing)_"
    if agrees is not None:
        match_md += (f"\n\n_The rating {'follows from' if agrees else 'does not follow from'} the match "
                     f"(it arrives at {match_result(parsed):g})._")
    return {"user": esc(sec.get("analyze user", "")) or "_(missing)_", "item": item_md,
            "match": match_md, "rating": verdict, "rewards": table,
            "raw": text, "valid": "yes" if parsed.valid else "no"}


def new_tokens(max_new_tokens: float) -> int:
    return int(min(MAX_NEW_TOKENS, max(1, max_new_tokens)))


def fitted_prompt(state: AppState, sample: dict, max_new_tokens: int) -> FittedPrompt:
    """The chat-rendered prompt within model.max_seq_length - max_new_tokens (the oldest
    history entries left out, as kit.evaluate does); refused with a message when even no
    history is too long."""
    budget = state.cfg.model.max_seq_length - max_new_tokens
    fitted = fit_prompt(sample, state.data, state.cfg, state.model().tokenizer, budget)
    if fitted.text is None:
        raise AppInputError(f"this prompt needs {fitted.tokens} tokens even without history, more than the {budget} "
                            f"that model.max_seq_length ({state.cfg.model.max_seq_length}) leaves beside "
                            f"{max_new_tokens} new tokens: lower max new tokens")
    return fitted


def trim_note(fitted: FittedPrompt) -> str:
    return (f"{fitted.dropped} oldest history entries left out to fit model.max_seq_length"
            if fitted.dropped else "")


def prompt_text(state: AppState, sample: dict, max_new_tokens: int | None = None) -> str:
    """The prompt as generation sees it, for `max_new_tokens` (default: evaluation.max_new_tokens)."""
    wanted = state.cfg.evaluation.max_new_tokens if max_new_tokens is None else max_new_tokens
    return fitted_prompt(state, sample, new_tokens(wanted)).text


def stream_answer(state: AppState, sample: dict, use_adapter: bool, temperature: float, max_new_tokens: int,
                  seed: int) -> Iterator[str]:
    from kit.model import stream_generate

    max_new_tokens = new_tokens(max_new_tokens)
    yield from stream_generate(state.model(), prompt_text(state, sample, max_new_tokens),
                               max_new_tokens=max_new_tokens, temperature=float(max(0.0, temperature)),
                               seed=int(seed), use_adapter=use_adapter)


def rating_spread(state: AppState, sample: dict, n: int, use_adapter: bool, temperature: float,
                   max_new_tokens: int, seed: int) -> dict:
    """n sampled answers: their ratings (None when malformed), mean and spread."""
    from kit.model import generate

    n = int(min(MAX_ANSWERS, max(1, n)))
    max_new_tokens = new_tokens(max_new_tokens)
    texts = generate(state.model(), [prompt_text(state, sample, max_new_tokens)], n=n,
                     max_new_tokens=max_new_tokens, temperature=max(0.05, float(temperature)), seed=int(seed),
                     progress=False, use_adapter=use_adapter, batch_size=n)
    return ratings_of_answers(texts, state.data.scale, state.cfg.prompt.style)


# --------------------------------------------------------------------------- UI

CSS = """
.kit-rating {font-size: 3em; font-weight: 700; line-height: 1.1}
.kit-bad {color: #b42318; font-size: 1.6em}
"""


def build_ui(state: AppState):
    import gradio as gr

    has_adapter = state.adapter_dir is not None
    sides = [("tuned", "Fine-tuned adapter"), ("base", "Base model")] if has_adapter else [("base", "Base model")]

    with gr.Blocks(title="reczero-kit: reason before you recommend") as demo:
        gr.Markdown("## Reason before you recommend\nPick a user and one of their rating targets, then generate. "
                    f"Model: `{state.cfg.model.name}`; adapter: `{state.adapter_dir or 'none (base model only)'}`.")
        with gr.Row():
            users = user_choices(state)
            user = gr.Dropdown(choices=users, value=users[0] if users else None, label="User (type to search)",
                               filterable=True,
                               allow_custom_value=True, elem_id="user-select")
            item = gr.Dropdown(choices=[], label="Item (the user's targets: id | split | title; or type any item id)", filterable=True,
                               allow_custom_value=True, elem_id="item-select")
        truth = gr.Markdown(elem_id="truth")
        with gr.Row():
            with gr.Column():
                gr.Markdown("#### The user's history (strictly before the target)")
                history = gr.Dataframe(interactive=False, wrap=True, elem_id="history",
                                       column_widths=["28%", "10%", "47%", "15%"])
            with gr.Column():
                item_info = gr.Markdown(elem_id="item-info")
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=min(MAX_NEW_TOKENS, state.cfg.evaluation.max_new_tokens),
                                   step=1, label="max new tokens")
            seed = gr.Number(value=0, precision=0, label="seed")
            n_answers = gr.Slider(1, MAX_ANSWERS, value=1, step=1, label="answers for the rating spread")
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        message = gr.Markdown(elem_id="message")
        outputs: dict[str, dict[str, Any]] = {}
        with gr.Row():
            for key, title in sides:
                with gr.Column():
                    gr.Markdown(f"### {title}")
                    o: dict[str, Any] = {}
                    o["rating"] = gr.HTML(elem_id=f"{key}-rating")
                    with gr.Group():
                        gr.Markdown("**1 · User analysis**")
                        o["user"] = gr.Markdown(elem_id=f"{key}-user")
                        gr.Markdown("**2 · Item analysis**")
                        o["item"] = gr.Markdown(elem_id=f"{key}-item")
                        gr.Markdown("**3 · Match**")
                        o["match"] = gr.Markdown(elem_id=f"{key}-match")
                    o["rewards"] = gr.Markdown(elem_id=f"{key}-rewards")
                    o["spread"] = gr.Markdown(elem_id=f"{key}-spread")
                    with gr.Accordion("Raw completion", open=False):
                        o["raw"] = gr.Code(language=None, elem_id=f"{key}-raw")
                    outputs[key] = o
        with gr.Accordion("How this run scores on held-out pairs", open=False):
            gr.Markdown(run_scores(state.run_dir), elem_id="run-scores")
        with gr.Accordion("Prompt (chat-rendered)", open=False):
            prompt_box = gr.Code(language=None, elem_id="prompt")

        def on_user(user_id):
            try:
                choices = item_choices(state, user_id)
            except AppInputError as exc:
                return gr.update(choices=[], value=None), f"**{exc}**"
            return gr.update(choices=choices, value=choices[0] if choices else None), ""

        def on_item(user_id, choice):
            try:
                sample = get_sample(state, user_id, parse_item_choice(choice))
            except AppInputError as exc:
                return f"**{exc}**", None, ""
            return truth_markdown(sample), history_table(state, sample).to_pandas(), item_markdown(state, sample)

        flat = [outputs[k][f] for k, _ in sides for f in ("rating", "user", "item", "match", "rewards", "spread", "raw")]

        def on_generate(user_id, choice, temp, max_new, seed_value, n):
            blank = {k: {f: "" for f in ("rating", "user", "item", "match", "rewards", "spread", "raw")}
                     for k, _ in sides}

            def pack(msg, prompt=""):
                return [msg, prompt] + [blank[k][f] for k, _ in sides
                                        for f in ("rating", "user", "item", "match", "rewards", "spread", "raw")]

            try:
                sample = get_sample(state, user_id, parse_item_choice(choice))
                fitted = fitted_prompt(state, sample, new_tokens(max_new))
            except AppInputError as exc:
                yield pack(f"**{exc}**")
                return
            prompt, note = fitted.text, trim_note(fitted)
            for key, _ in sides:
                text = ""
                for text in stream_answer(state, sample, key == "tuned", temp, max_new, seed_value):
                    blank[key].update(answer_panels(text, sample, state.data.scale, state.rewards,
                                                    state.cfg.prompt.style))
                    blank[key]["rating"] = "<div>generating...</div>"
                    yield pack("generating...", prompt)
                blank[key].update(answer_panels(text, sample, state.data.scale, state.rewards,
                                                state.cfg.prompt.style, evidence=prompt))
                if int(n) > 1:
                    s = rating_spread(state, sample, int(n), key == "tuned", temp or 0.7, max_new, seed_value)
                    shown = ", ".join("malformed" if r is None else f"{r:g}" for r in s["ratings"])
                    mean = "-" if s["mean"] is None else f"{s['mean']:.2f}"
                    blank[key]["spread"] = f"**{int(n)} answers:** {shown}  \nmean {mean}, spread (std) {s['spread']:.2f}"
                yield pack("", prompt)
            yield pack("done" + (f" · {note}" if note else ""), prompt)

        user.change(on_user, [user], [item, message])
        demo.load(on_user, [user], [item, message])  # the first user is preselected: fill its items
        item.change(on_item, [user, item], [truth, history, item_info])
        go.click(on_generate, [user, item, temperature, max_tokens, seed, n_answers], [message, prompt_box, *flat],
                 api_name="generate")
    demo.queue(default_concurrency_limit=1, max_size=16)
    return demo


def launch(state: AppState, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           block: bool = True):
    import gradio as gr

    demo = build_ui(state)
    # quiet: Gradio's own hint names its Python argument (`share=True` in launch()); the kit
    # prints its own, with the command-line flag
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                show_error=False, allowed_paths=[], max_file_size="1mb", css=CSS, theme=gr.themes.Soft())
    print(serving_message(demo.local_url, demo.share_url, share, host), flush=True)
    if block:
        demo.block_thread()
    return demo


def serving_message(local_url: str, share_url: str | None, share: bool, host: str = "127.0.0.1") -> str:
    """Where the app is, and how to share it, in the kit's own terms (its flag, not Gradio's argument)."""
    if share_url:
        return f"kit: app at {local_url} and {share_url} (a temporary public link: anyone with it can use the app)"
    if share:
        return f"kit: app at {local_url} (the public link could not be created, see above)"
    reach = "this machine only" if host in ("127.0.0.1", "localhost") else f"bound to {host}"
    return f"kit: app at {local_url} ({reach}; add --share for a temporary public link)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run folder from kit.train (config + adapter)")
    ap.add_argument("--config", help="a recipe, without a run (base model only); default cpu-demo")
    ap.add_argument("--data", help="a prepared data folder (python -m kit.data prepare) instead of the recipe's data")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    from kit.versions import check_versions

    check_versions(warn=lambda m: print(m, file=sys.stderr))
    try:
        state = build_state(args.run, args.config, args.overrides, args.data)
    except ConfigError as exc:
        print(f"kit: error: {exc}", file=sys.stderr)
        return 2
    launch(state, args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
