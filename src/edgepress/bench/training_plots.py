"""The training curves of a stage (its curves.json, written by compress/training/monitor.py) as a
PNG: training and validation loss against the step on the left, the validation metrics on the right;
a stage that trains more than once (distillation's two phases, prune's recoveries) gets a line per run."""

from __future__ import annotations

import io
from typing import Any

_METRICS = ("accuracy", "f1", "f1_macro")  # the validation scores worth a line, whichever the task has


def curves_png(stage: str, runs: dict[str, dict[str, Any]]) -> bytes:
    """The plot's PNG bytes; empty when no run logged a step."""
    if not any(run.get("steps") or run.get("evaluations") for run in runs.values()):
        return b""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = any(metric in p for run in runs.values() for p in run.get("evaluations") or [] for metric in _METRICS)
    # adapt has a loss and no score: one panel
    figure, axes_list = plt.subplots(1, 2 if scored else 1, figsize=(10 if scored else 5.5, 3.4), dpi=100, squeeze=False)
    losses, scores = axes_list[0][0], axes_list[0][-1]
    for part, run in runs.items():
        name = "" if len(runs) == 1 else f"{part}: "
        steps, evaluations = run.get("steps") or [], run.get("evaluations") or []
        if steps:
            losses.plot([p["step"] for p in steps], [p["loss"] for p in steps], label=f"{name}training loss", linewidth=1)
        validated = [p for p in evaluations if "loss" in p]
        if validated:
            losses.plot([p["step"] for p in validated], [p["loss"] for p in validated], "o--", label=f"{name}validation loss", markersize=3)
        for metric in _METRICS:
            points = [p for p in evaluations if metric in p]
            if points:
                scores.plot([p["step"] for p in points], [p[metric] for p in points], "o-", label=f"{name}validation {metric}", markersize=3)
    losses.set_xlabel("step")
    losses.set_ylabel("loss")
    if scored:
        scores.set_xlabel("step")
        scores.set_ylabel("validation score")
    for axes in {losses, scores}:
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.suptitle(f"{stage}: training curves", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
