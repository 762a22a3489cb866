"""The study: each Optuna trial is a recipe run; its final artifact gives the objectives.

Stage folders are placed by fingerprint under ``<output_dir>/<name>/stages/``, so trials that share a
prefix of stages (one distilled student under many prune settings) compute it once. The study lives in
an Optuna RDB storage (SQLite by default): a killed search is resumed by running it again, and only
the trials still missing run. Selection reads validation metrics only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgepress.errors import EdgepressError
from edgepress.search.space import Space, suggest, trial_recipe

if TYPE_CHECKING:
    import optuna

    from edgepress.pipeline import StageOutcome

log = logging.getLogger(__name__)

DIRECTIONS = {"accuracy": "maximize", "f1_macro": "maximize", "latency_ms": "minimize", "size_mb": "minimize"}
LIMITS = {"latency_ms": "latency_ms", "size_mb": "size_mb", "min_accuracy": "accuracy"}
Measure = Callable[[Path], float]  # an artifact file -> its batch-1 latency in ms


@dataclass(frozen=True)
class Plan:
    """What to optimize, under which limits, for how many trials."""

    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    limits: tuple[tuple[str, float], ...] = ()  # ("latency_ms", 5.0): at most; ("min_accuracy", 0.9): at least
    trials: int = 20

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in DIRECTIONS] + [k for k, _ in self.limits if k not in LIMITS]
        if unknown:
            raise EdgepressError(f"search: unknown objective or limit {unknown[0]!r}; known: {', '.join([*DIRECTIONS, *LIMITS])}")


def final_artifact(outcome: "StageOutcome") -> Path:
    """The deployable file of a run's last stage: the kept int8 file, the fused graph, or the torch weights."""
    metrics = outcome.manifest.get("metrics") or {}
    name = metrics.get("evaluated_file")
    if name and (outcome.folder / name).is_file():
        return outcome.folder / name
    weights = outcome.folder / "model.safetensors"
    if weights.is_file():
        return weights
    raise EdgepressError(f"search: {outcome.folder} has no artifact to measure; end the recipe with export or quantize")


def trial_values(outcome: "StageOutcome", measure: Measure | None) -> dict[str, float]:
    """Validation accuracy and macro-F1, file size, and (when ``measure`` is given) batch-1 latency."""
    validation = (outcome.manifest.get("metrics") or {}).get("validation") or {}
    artifact = final_artifact(outcome)
    values = {
        "accuracy": float(validation.get("accuracy", float("nan"))),
        "f1_macro": float(validation.get("f1_macro", float("nan"))),
        "size_mb": artifact.stat().st_size / 1e6,
    }
    if measure is not None:
        values["latency_ms"] = float(measure(artifact))
    return values


def violations(values: dict[str, float], limits: tuple[tuple[str, float], ...]) -> list[float]:
    """Optuna's constraint convention: one number per limit, <= 0 where it is met."""
    return [limit - values["accuracy"] if key == "min_accuracy" else values[LIMITS[key]] - limit for key, limit in limits]


def run_study(
    base: dict[str, Any], space: Space, plan: Plan, storage: str, measure: Measure | None = None,
    sampler: "optuna.samplers.BaseSampler | None" = None, timeout: float | None = None,
) -> "optuna.Study":
    """Create or resume the study named after the recipe and run the trials it still lacks."""
    import optuna

    from edgepress.pipeline import run_recipe

    store = Path(base.get("output_dir", "runs")) / base.get("name", "search") / "stages"
    directions = [DIRECTIONS[o] for o in plan.objectives]
    sampler = sampler or optuna.samplers.TPESampler(seed=0, constraints_func=lambda t: t.user_attrs.get("constraints", []))
    study = optuna.create_study(study_name=base.get("name", "search"), storage=storage, directions=directions, sampler=sampler, load_if_exists=True)

    def objective(trial: "optuna.Trial") -> tuple[float, ...]:
        values = suggest(trial, space)
        recipe = trial_recipe(base, values, where=f"search trial {trial.number}")
        outcomes = run_recipe(recipe, place=lambda index, stage, fingerprint: store / f"{stage}-{fingerprint[:16]}")
        measured = trial_values(outcomes[-1], measure)
        trial.set_user_attr("values", measured)
        trial.set_user_attr("chosen", values)  # the recipe values (a section chosen from a list, as itself)
        trial.set_user_attr("constraints", violations(measured, plan.limits))
        trial.set_user_attr("reused_stages", sum(o.skipped for o in outcomes))
        log.info("search trial %d: %s -> %s", trial.number, values, {o: round(measured[o], 4) for o in plan.objectives})
        return tuple(measured[o] for o in plan.objectives)

    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    finished = sum(t.state in ended for t in study.trials)  # a resumed study runs only what is missing
    _share_baseline(study, measure)
    if finished < plan.trials:
        study.optimize(objective, n_trials=plan.trials - finished, timeout=timeout, catch=(EdgepressError,))
    return study


def feasible_front(study: "optuna.Study") -> list["optuna.trial.FrozenTrial"]:
    """The Pareto-optimal trials among those that meet every limit."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in t.user_attrs.get("constraints", []))]
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]

    def dominates(a, b) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in done if not any(dominates(o, t) for o in done if o is not t)]


def _share_baseline(study: "optuna.Study", measure: Measure | None) -> None:
    """A timer's reference latency is recorded with the study, so a resumed search reuses it."""
    if measure is None or not hasattr(measure, "baseline_ms"):
        return
    if "reference_ms" in study.user_attrs:
        measure.baseline_ms = study.user_attrs["reference_ms"]
    else:
        measure(measure.reference)  # times the reference against itself: records its baseline
        study.set_user_attr("reference_ms", measure.baseline_ms)
