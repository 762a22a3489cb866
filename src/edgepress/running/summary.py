"""What a run prints when it ends: one row per stage, and the headline metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from edgepress.running.pipeline import StageOutcome


def _percent(metrics: dict, split: str, key: str) -> str:
    value = metrics.get(split, {}).get(key)
    return "-" if value is None else f"{100 * value:.2f}%"


def print_summary(outcomes: list["StageOutcome"], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title="edgepress run")
    for column in ("stage", "status", "time", "val acc", "test acc", "test F1", "artifact"):
        table.add_column(column, justify="right" if column in ("time", "val acc", "test acc", "test F1") else "left", overflow="fold")
    for outcome in outcomes:
        metrics = outcome.manifest.get("metrics", {})
        table.add_row(
            outcome.stage,
            "up to date" if outcome.skipped else "ran",
            f"{outcome.manifest.get('wall_time_s', 0):.0f} s",
            _percent(metrics, "validation", "accuracy"),
            _percent(metrics, "test", "accuracy"),
            _percent(metrics, "test", _f1(metrics)),
            str(outcome.folder),
        )
    console.print(table)
    for outcome in outcomes:
        if "perplexity" in (metrics := outcome.manifest.get("metrics", {})):  # adapt: masked-LM, no accuracy
            head = ", a new masked-LM head" if metrics.get("new_mlm_head") else ""
            console.print(f"{outcome.stage}: held-out perplexity {metrics['perplexity_before']:.2f} -> {metrics['perplexity']:.2f}{head} ({outcome.folder})")
    last = outcomes[-1]
    metrics = last.manifest.get("metrics", {})
    report = last.folder / "report.md"
    if report.is_file():  # a benchmark: its table is the result
        console.print(report.read_text(encoding="utf-8"), markup=False, soft_wrap=True)
    if "test" not in metrics:
        console.print(f"{last.stage}: wrote {last.folder} ({metrics.get('accuracy_note', 'no accuracy measured')})")
        return
    f1_name = "entity F1" if _f1(metrics) == "f1" else "macro-F1"
    console.print(
        f"{last.stage}: test accuracy {_percent(metrics, 'test', 'accuracy')}, "
        f"{f1_name} {_percent(metrics, 'test', _f1(metrics))} ({last.folder})"
    )


def _f1(metrics: dict) -> str:
    """Entity F1 for token classification (its accuracy is of words), macro-F1 for text."""
    return "f1" if "f1" in metrics.get("test", {}) else "f1_macro"
