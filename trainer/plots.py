"""The loss curve of a training run, drawn from the Trainer's log history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def loss_points(history: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``(step, loss)`` pairs for ``train`` and ``eval`` from Trainer log entries."""
    points: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    for entry in history:
        step = int(entry.get("step", 0))
        if "loss" in entry:
            points["train"].append((step, float(entry["loss"])))
        if "eval_loss" in entry:
            points["eval"].append((step, float(entry["eval_loss"])))
    return points


def log_scale(points: Mapping[str, list[tuple[int, float]]], span: float = 20.0) -> bool:
    """Whether the losses span more than ``span`` times, so a log axis shows the tail.

    A LoRA run's loss falls by two orders of magnitude; on a linear axis its
    second half is a flat line at zero, where the eval loss still moves.
    """
    losses = [loss for pts in points.values() for _, loss in pts]
    return bool(losses) and min(losses) > 0 and max(losses) / min(losses) > span


def plot_loss(history: Iterable[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Write a PNG of train and eval loss against the optimiser step to ``path``.

    Uses the Agg backend, so it works on machines without a display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = loss_points(history)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    styles: dict[str, dict[str, Any]] = {
        "train": {"marker": ".", "alpha": 0.8}, "eval": {"marker": "o", "linewidth": 2}}
    for name, pts in points.items():
        if pts:
            steps, losses = zip(*pts, strict=True)
            ax.plot(steps, losses, label=f"{name} loss", **styles[name])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    if log_scale(points):
        ax.set_yscale("log")
        ax.set_ylabel("loss (answer tokens, log scale)")
    ax.set_title(title or "LoRA fine-tuning")
    ax.grid(True, alpha=0.3)
    if any(points.values()):
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
