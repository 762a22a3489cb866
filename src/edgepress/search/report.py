"""What a search leaves for people: a line per trial, the feasible Pareto front (with its test
scores, read only here), a plot of accuracy against latency, and ``search.json``.

The stages measure the test split as they always do; the search never reads it to choose. It is
read from the manifests of the final front's trials only, once the front is fixed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.running.runs import read_manifest

if TYPE_CHECKING:
    import optuna


def trial_line(trial: "optuna.trial.FrozenTrial", objectives: tuple[str, ...]) -> dict[str, Any]:
    """One trial as a flat record: number, state, chosen values, measured values, feasibility, why it ended."""
    values = trial.user_attrs.get("values") or {}
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "params": trial.params,
        "values": {k: values[k] for k in (*objectives, "accuracy", "size_mb", "latency_ms") if k in values},
        "feasible": bool(values) and all(v <= 0 for v in trial.constraints.values()),
        "note": _note(trial),
        "final_folder": trial.user_attrs.get("final_folder"),
        "worker": trial.user_attrs.get("worker"),  # host:pid
    }


def _note(trial: "optuna.trial.FrozenTrial") -> str:
    attrs = trial.user_attrs
    if "stopped" in attrs:
        return f"stopped early: {attrs['stopped']}"
    if "error" in attrs:
        return f"failed: {attrs['error']}"
    if trial.state.name == "FAIL":
        worker = f" ({attrs['worker']})" if "worker" in attrs else ""
        return f"interrupted: its process{worker} stopped; re-run as a later trial"
    retried = trial.system_attrs.get("failed_trial")
    notes = [f"re-run of trial {retried}"] if retried is not None else []
    if attrs.get("reused_stages"):
        notes.append(f"{attrs['reused_stages']} stage(s) reused")
    return "; ".join(notes)


def test_scores(front: list["optuna.trial.FrozenTrial"]) -> dict[int, dict[str, float]]:
    """The test metrics each front trial's final stage recorded, read now that the front is chosen."""
    scores = {}
    for trial in front:
        manifest = read_manifest(Path(trial.user_attrs.get("final_folder", ""))) or {}
        test = (manifest.get("metrics") or {}).get("test") or {}
        scores[trial.number] = {k: test[k] for k in ("accuracy", "f1_macro", "f1") if k in test}
    return scores


def print_trials(study: "optuna.Study", objectives: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search {study.study_name}: {len(study.trials)} trials")
    for column in ("trial", "state", *objectives, "feasible", "values", "note"):
        table.add_column(column, justify="right" if column in objectives or column == "trial" else "left", overflow="fold")
    for trial in study.trials:
        line = trial_line(trial, objectives)
        measured = [f"{line['values'][o]:.4g}" if o in line["values"] else "-" for o in objectives]
        feasible = ("yes" if line["feasible"] else "no") if line["values"] else "-"
        table.add_row(str(trial.number), line["state"], *measured, feasible, _params(trial), line["note"])
    Console(highlight=False, width=160).print(table)


def print_front(study: "optuna.Study", front: list["optuna.trial.FrozenTrial"], objectives: tuple[str, ...], tests: dict[int, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search {study.study_name}: {len(front)} feasible Pareto-optimal of {len(study.trials)} trials (test: read once, for these)")
    # the test score of the search's own metric: entity F1 where the objectives name it, else accuracy
    metric = "f1" if "f1" in objectives else "accuracy"
    for column in ("trial", *objectives, f"test {metric}", "values"):
        table.add_column(column, justify="left" if column == "values" else "right", overflow="fold")
    for trial in sorted(front, key=lambda t: t.number):
        measured = trial.user_attrs["values"]
        test = tests.get(trial.number, {}).get(metric)
        table.add_row(str(trial.number), *(f"{measured[o]:.4g}" for o in objectives), "-" if test is None else f"{test:.4f}", _params(trial))
    Console(highlight=False, width=160).print(table)


def _params(trial: "optuna.trial.FrozenTrial") -> str:
    return ", ".join(f"{k}={v}" for k, v in trial.params.items())


def write_json(study: "optuna.Study", front, objectives: tuple[str, ...], limits: dict[str, float], tests: dict[int, dict], path: Path) -> None:
    document = {
        "study": study.study_name,
        "objectives": list(objectives),
        "limits": limits,
        "reference_ms": study.user_attrs.get("reference_ms"),
        "trials": [trial_line(t, objectives) for t in study.trials],
        "front": [{"trial": t.number, "validation": _finite(t.user_attrs["values"]), "test": tests.get(t.number, {})} for t in front],
    }
    path.write_text(json.dumps(document, indent=2, default=str, allow_nan=False), encoding="utf-8")


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Without NaN (studies written before every value was measured): search.json stays strict JSON."""
    return {k: v for k, v in values.items() if v == v}


def write_plot(study: "optuna.Study", front, limits: dict[str, float], path: Path) -> bool:
    """Validation accuracy against batch-1 latency (file size where latency was not measured), marker
    area by file size; infeasible trials hollow, the feasible front in colour. False when nothing to draw."""
    done = [t for t in study.trials if t.user_attrs.get("values") and t.state.name == "COMPLETE"]
    if not done:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = "latency_ms" if all("latency_ms" in t.user_attrs["values"] for t in done) else "size_mb"
    figure, axes = plt.subplots(figsize=(7, 4.5))
    chosen = {t.number for t in front}
    for trial in done:
        values = trial.user_attrs["values"]
        feasible = trial.number in chosen
        axes.scatter(values[x_key], 100 * values["accuracy"], s=20 + 4 * values["size_mb"],
                     facecolors="tab:red" if feasible else "none", edgecolors="tab:red" if feasible else "grey")  # fmt: skip
        axes.annotate(str(trial.number), (values[x_key], 100 * values["accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    reference_ms = study.user_attrs.get("reference_ms")
    if x_key == "latency_ms" and "latency_ratio" in limits and reference_ms:
        axes.axvline(limits["latency_ratio"] * reference_ms, color="grey", linestyle=":", linewidth=1)
    if x_key in limits:
        axes.axvline(limits[x_key], color="grey", linestyle="--", linewidth=1)
    if "min_accuracy" in limits:
        axes.axhline(100 * limits["min_accuracy"], color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("batch-1 p50 latency (ms)" if x_key == "latency_ms" else "file size (MB)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"search {study.study_name}: filled = feasible Pareto front; marker area = file size", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
