"""Which GRPO settings, after the same SFT, lower the rating error on the valid split?

Every variant starts from the SFT adapter of one finished run on the valid split (its `priming/`
folder and its after-SFT evaluation are copied, and reused through their settings records), trains
GRPO only, and is scored greedily on the same valid pairs; each is then tested, pair by pair,
against the SFT model and against the item's earlier average. The test split is never looked at.

    python -m kit.train --config cpu-demo data.eval_split=valid output_dir=runs/tune budget.minutes=null
    python benchmarks/tune_grpo.py runs/tune                       # the variants below
    python benchmarks/tune_grpo.py runs/tune --only lr-3e-5        # some of them

Writes runs/tune-grpo/table.md (and prints it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS: dict[str, list[str]] = {
    "lr-3e-5": ["grpo.learning_rate=3e-5"],
    "group-scaling": ["grpo.scale_rewards=group"],
    "rating-only": ["rewards=[{name: format, weight: 1.0}, {name: rating, weight: 2.0}]"],
    "temperature-0.7": ["grpo.temperature=0.7"],
}
COPIED = ("priming", "eval_primed.json", "eval_primed.settings.json", "predictions_primed.jsonl")


def run_variant(run: Path, out: Path, overrides: list[str]) -> None:
    if (out / "summary.json").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = run / name, out / name
        if dst.exists():
            continue
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    config = run / "config.yaml"
    cmd = [sys.executable, "-m", "kit.train", "--config", str(config), f"output_dir={out}",
           "evaluation.before_training=false", "budget.minutes=null", *overrides]
    print("kit: tune:", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def table(rows: dict[str, Path]) -> str:
    from kit.io import read_jsonl
    from kit.report import compare, pair_errors, with_ci

    def errors(path: Path) -> dict:
        return pair_errors(read_jsonl(path), (1.0, 5.0))

    first = next(iter(rows.values()))
    sft = errors(first / "predictions_primed.jsonl")
    item = {(r["user_id"], r["item_id"]): abs(r["rating"] - r["item_avg"])
            for r in read_jsonl(first / "predictions_primed.jsonl")}
    lines = ["| variant | MAE [95% CI] | rate follows match | vs after SFT (paired) | vs item's earlier average |",
             "|---|---|---|---|---|"]
    summary = json.loads((first / "summary.json").read_text())
    primed = summary["eval_primed"]
    lines.append(f"| after SFT | {with_ci(primed, 'mae')} | {_share(primed)} | | "
                 f"{_test(compare('sft', list(sft.values()), 'item', [item[k] for k in sft]))} |")
    for name, folder in rows.items():
        after = json.loads((folder / "summary.json").read_text())["eval_after"]
        mine = errors(folder / "predictions_after.jsonl")
        keys = [k for k in sft if k in mine]
        vs_sft = compare(name, [mine[k] for k in keys], "sft", [sft[k] for k in keys])
        vs_item = compare(name, [mine[k] for k in keys], "item", [item[k] for k in keys])
        lines.append(f"| GRPO {name} | {with_ci(after, 'mae')} | {_share(after)} | {_test(vs_sft)} | "
                     f"{_test(vs_item)} |")
    return "\n".join(lines)


def _share(m: dict) -> str:
    c = m.get("consistency")
    return f"{c['share']:.0%}" if c else "-"


def _test(c) -> str:
    return f"{c.delta:+.3f} [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], p={c.p:.2g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run on the valid split (its SFT is reused)")
    ap.add_argument("--only", nargs="*", help=f"variants to run (default all: {', '.join(VARIANTS)})")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "tune-grpo")
    args = ap.parse_args()
    names = args.only or list(VARIANTS)
    rows = {"as the recipe": args.run}
    for name in names:
        run_variant(args.run, args.out / name, VARIANTS[name])
        rows[name] = args.out / name
    text = table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
