"""Plots for reports (matplotlib, headless): where the model is wrong, and how training went."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_plot(truths: list[float], preds: list[float | None], scale: tuple[float, float], path: Path) -> None:
    """True rating (rows) vs rounded prediction (columns), with malformed answers as their own column."""
    levels = list(range(int(scale[0]), int(scale[1]) + 1))
    grid = np.zeros((len(levels), len(levels) + 1), dtype=int)
    for t, p in zip(truths, preds):
        row = levels.index(int(round(t))) if int(round(t)) in levels else None
        if row is None:
            continue
        col = len(levels) if p is None else levels.index(int(min(scale[1], max(scale[0], round(p)))))
        grid[row, col] += 1
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(levels), 0.9 + 0.7 * len(levels)))
    ax.imshow(grid, cmap="Blues")
    for (r, c), v in np.ndenumerate(grid):
        ax.text(c, r, str(v), ha="center", va="center", color="black" if v < grid.max() * 0.6 else "white")
    ax.set_xticks(range(len(levels) + 1), [str(x) for x in levels] + ["invalid"])
    ax.set_yticks(range(len(levels)), [str(x) for x in levels])
    ax.set_xlabel("predicted (rounded)")
    ax.set_ylabel("true rating")
    ax.set_title("true vs predicted rating")
    _save(fig, path)


def distribution_plot(truths: list[float], preds: list[float | None], scale: tuple[float, float], path: Path) -> None:
    levels = np.arange(int(scale[0]), int(scale[1]) + 1)
    valid = [p for p in preds if p is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.arange(scale[0] - 0.5, scale[1] + 1.0, 0.5 if any(p != round(p) for p in valid) else 1.0)
    ax.hist([truths, valid], bins=bins, label=["truth", f"prediction (valid: {len(valid)}/{len(preds)})"],
            color=["#999999", "#1f77b4"])
    ax.set_xticks(levels)
    ax.set_xlabel("rating")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title("distribution of predictions vs truth")
    _save(fig, path)


def reliability_plot(calib: dict, mae_by_rating: dict[str, float], path: Path) -> None:
    """Left: predicted probability of a rating vs how often it was the truth (the diagonal is a
    calibrated model; dot size ~ how many (pair, rating) cases fall in the bin). Right: the error
    by true rating."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = calib["bins"]
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", label="calibrated")
    sizes = [20 + 180 * b["n"] / max(x["n"] for x in bins) for b in bins]
    ax.scatter([b["mean_p"] for b in bins], [b["freq"] for b in bins], s=sizes, color="#1f77b4",
               label=f"model (ECE {calib['ece']:.3f})")
    ax.plot([b["mean_p"] for b in bins], [b["freq"] for b in bins], color="#1f77b4", alpha=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of a rating")
    ax.set_ylabel("observed frequency of that rating")
    ax.set_title(f"reliability ({calib['pairs']} pairs; mean p(true) {calib['p_true']:.2f})")
    ax.legend(loc="upper left", fontsize=8)
    levels = list(mae_by_rating)
    ax2.bar(levels, [mae_by_rating[k] for k in levels], color="#1f77b4")
    ax2.set_xlabel("true rating")
    ax2.set_ylabel("MAE")
    ax2.set_title("error by true rating")
    _save(fig, path)


def reward_curves(metrics: list[dict], path: Path) -> bool:
    """Per-component reward means, total reward, zero-spread fraction and completion length per GRPO step."""
    rows = [m for m in metrics if m.get("phase", "grpo") == "grpo" and "reward" in m]
    if not rows:
        return False
    steps = [m["step"] for m in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
    for key in sorted(k for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean")):
        axes[0].plot(steps, [float(m.get(key, np.nan)) for m in rows], label=key.split("/")[1])
    axes[0].plot(steps, [float(m["reward"]) for m in rows], "k--", label="total (weighted)")
    axes[0].set_title("reward per component")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [float(m.get("frac_reward_zero_std", np.nan)) for m in rows])
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_title("groups with zero reward spread")
    axes[2].plot(steps, [float(m.get("completions/mean_length", np.nan)) for m in rows])
    axes[2].set_title("mean completion length (tokens)")
    for ax in axes:
        ax.set_xlabel("GRPO step")
    _save(fig, path)
    return True


def comparison_plot(names: list[str], maes: list[float], rmses: list[float], path: Path) -> None:
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.8))
    ax.bar(x - 0.2, maes, 0.4, label="MAE")
    ax.bar(x + 0.2, rmses, 0.4, label="RMSE")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.legend()
    ax.set_title("rating error (lower is better)")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    fig.tight_layout()
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
