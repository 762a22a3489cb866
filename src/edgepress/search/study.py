"""The study: each Optuna trial is a recipe run; its final artifact gives the objectives.

Stage folders are placed by fingerprint under ``<output_dir>/<name>/stages/``, so trials that share a
prefix of stages (one distilled student under many prune settings) compute it once. The study lives in
an Optuna RDB storage (SQLite by default): a killed search is resumed by running it again, and only
the trials still missing run. A running trial beats a heartbeat into the storage; one whose heartbeat
stops (its process was killed) is marked failed and its values are queued again, so the next trial
to start re-runs it, reusing whatever stages it had finished. Selection reads validation metrics only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgepress.errors import EdgepressError, RecipeError
from edgepress.search.space import Space, suggest, trial_recipe
from edgepress.search.stopping import EarlyStop

if TYPE_CHECKING:
    import optuna

    from edgepress.running.pipeline import StageOutcome

log = logging.getLogger(__name__)

DIRECTIONS = {"accuracy": "maximize", "f1_macro": "maximize", "f1": "maximize", "latency_ms": "minimize", "size_mb": "minimize"}
LIMITS = {"latency_ms": "latency_ms", "latency_ratio": "latency_ratio", "size_mb": "size_mb", "min_accuracy": "accuracy", "min_f1": "f1"}
SCORES = ("accuracy", "f1_macro", "f1")  # the validation metrics a trial records (f1: entity F1 of token classification)
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


def deployable(outcome: "StageOutcome") -> list[tuple[Path, dict]]:
    """Every file the last stage kept, with its validation metrics: each int8 variant of a quantize
    stage (ONNX Runtime's and OpenVINO's; all are within its tolerance), else the one final artifact."""
    metrics = outcome.manifest.get("metrics") or {}
    found = [
        (outcome.folder / v["file"], v.get("validation") or {})
        for v in (metrics.get("variants") or {}).values()
        if Path(v.get("file", "")).suffix in (".onnx", ".xml") and (outcome.folder / v["file"]).is_file()
    ]  # fmt: skip
    return found or [(final_artifact(outcome), metrics.get("validation") or {})]


def trial_values(outcome: "StageOutcome", measure: Measure | None) -> dict[str, float]:
    """Validation accuracy, macro-F1 or entity F1, file size, and (when ``measure`` is given) batch-1
    latency. With a timer and several kept files (ONNX Runtime's and OpenVINO's int8 variants), each is
    timed and the fastest one's figures are the trial's: what this target would deploy."""
    candidates = deployable(outcome)
    if measure is None:
        candidates, latencies = candidates[:1], [None]
    else:
        latencies = [float(measure(path)) for path, _ in candidates]
    best = min(range(len(candidates)), key=lambda i: latencies[i] or 0.0)
    artifact, validation = candidates[best]
    values = {k: float(validation[k]) for k in SCORES if validation.get(k) is not None}
    values["size_mb"] = _bytes(artifact) / 1e6
    if measure is not None:
        values["latency_ms"] = latencies[best]
        baseline = getattr(measure, "baseline_ms", None)
        if baseline:  # against the reference, in the same rounds: what a relative limit reads
            values["latency_ratio"] = values["latency_ms"] / baseline
    return values


def _bytes(artifact: Path) -> int:
    """An OpenVINO IR is its .xml and its .bin."""
    weights = artifact.with_suffix(".bin")
    return artifact.stat().st_size + (weights.stat().st_size if artifact.suffix == ".xml" and weights.is_file() else 0)


def violations(values: dict[str, float], limits: tuple[tuple[str, float], ...]) -> list[float]:
    """Optuna's constraint convention: one number per limit, <= 0 where it is met."""
    return [limit - values[LIMITS[key]] if key.startswith("min_") else values[LIMITS[key]] - limit for key, limit in limits]


def run_study(
    base: dict[str, Any], space: Space, plan: Plan, storage: "str | optuna.storages.BaseStorage", measure: Measure | None = None,
    sampler: "optuna.samplers.BaseSampler | None" = None, timeout: float | None = None, stop: EarlyStop | None = None,
) -> "optuna.Study":
    """Create or resume the study named after the recipe and run the trials it still lacks."""
    import optuna

    from edgepress.running.pipeline import run_recipe

    store = Path(base.get("output_dir", "runs")) / base.get("name", "search") / "stages"
    if not logging.getLogger("edgepress").isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # edgepress prints each trial's line itself
    directions = [DIRECTIONS[o] for o in plan.objectives]
    sampler = sampler or optuna.samplers.TPESampler(seed=0)  # samplers read the constraints each trial sets
    study = optuna.create_study(study_name=base.get("name", "search"), storage=storage, directions=directions, sampler=sampler, load_if_exists=True)

    def objective(trial: "optuna.Trial") -> tuple[float, ...]:
        values = suggest(trial, space)
        trial.set_user_attr("worker", worker_name())  # which process ran it: a shared study has several
        trial.set_user_attr("chosen", values)  # the recipe values (a section chosen from a list, as itself)
        try:
            recipe = trial_recipe(base, values, where=f"search trial {trial.number}")
            if stop:
                stop.check_architecture(trial, recipe)
            hook = stop.after_stage(trial, recipe.stages[-1]) if stop else None
            outcomes = run_recipe(recipe, place=lambda index, stage, fingerprint: store / f"{stage}-{fingerprint[:16]}", after_stage=hook)
            measured = trial_values(outcomes[-1], measure)
            absent = [o for o in plan.objectives if o not in measured]
            if absent:  # a final stage that measures no validation metrics (bench)
                raise EdgepressError(f"search: the {outcomes[-1].stage} stage records no validation {absent[0]}; use accuracy (or f1 for token classification)")
        except EdgepressError as exc:
            trial.set_user_attr("error", str(exc))  # a failure of the recipe, not of the process: counts as done
            raise
        trial.set_user_attr("values", measured)
        trial.set_user_attr("final_folder", str(outcomes[-1].folder))
        for (key, _), violation in zip(plan.limits, violations(measured, plan.limits)):
            trial.set_constraint(key, violation)  # <= 0: met
        trial.set_user_attr("reused_stages", sum(o.skipped for o in outcomes))
        log.info("search trial %d: %s -> %s", trial.number, values, {o: round(measured[o], 4) for o in plan.objectives})
        return tuple(measured[o] for o in plan.objectives)

    _share_baseline(study, measure)
    study.set_user_attr("limits", dict(plan.limits))  # what `search show` judges feasibility by
    missing = plan.trials - len(done_trials(study))  # a resumed study runs only what is missing
    if missing > 0:
        study.optimize(objective, n_trials=missing, timeout=timeout, catch=(EdgepressError,), callbacks=[_stop_when_full(plan.trials)])
    return study


def worker_name() -> str:
    """``host:pid`` of this process, as a shared study's trials record who ran them."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _stop_when_full(total: int):
    """Other processes may be adding trials to a shared study: stop once it holds ``total``."""

    def callback(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        if len(done_trials(study)) >= total:
            study.stop()

    return callback


def open_storage(url: str, heartbeat_s: int) -> "str | optuna.storages.BaseStorage":
    """An RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats: a trial whose process died is
    failed after ``2 * heartbeat_s`` without one, and its values queued again (at most twice)."""
    import warnings

    import optuna

    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url  # e.g. a journal file storage: no heartbeats, resumes all the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: experimental since Optuna 2.9
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s, heartbeat_stale_trial_callback=retry)
        except ImportError as exc:  # Optuna's wrapping of the driver's ModuleNotFoundError
            raise RecipeError(_no_driver(url, getattr(exc.__cause__ or exc, "name", None) or "of its driver")) from None
        except Exception as exc:  # SQLAlchemy's OperationalError and kin: the server, not the study
            if type(exc).__module__.startswith("sqlalchemy"):
                raise RecipeError(f"cannot open the study storage {_safe(url)}: {_first_line(exc)}; check that the database server runs and the URL (user, host, port, database) is right") from None
            raise


def _no_driver(url: str, module: str | None) -> str:
    if url.startswith("postgresql"):
        return (f"the storage {_safe(url)} needs the Python module {module}, which is not installed; pip install 'edgepress[postgres]' "
                "(psycopg 3) and write the URL as postgresql+psycopg://user@host:port/database")  # fmt: skip
    return f"the storage {_safe(url)} needs the Python module {module}, which is not installed; install the database driver SQLAlchemy names"


def _safe(url: str) -> str:
    """The URL without its password: error messages end up in CI logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the given URL"


def _first_line(exc: Exception) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def done_trials(study: "optuna.Study") -> list["optuna.trial.FrozenTrial"]:
    """Trials that count towards the total: complete, stopped early, or failed by the recipe. A trial
    failed because its process died (no heartbeat, no error recorded) does not: it is re-run."""
    import optuna

    state = optuna.trial.TrialState
    return [
        t for t in study.trials
        if t.state in (state.COMPLETE, state.PRUNED) or (t.state == state.FAIL and "error" in t.user_attrs)
    ]  # fmt: skip


def feasible_front(study: "optuna.Study") -> list["optuna.trial.FrozenTrial"]:
    """The Pareto-optimal trials among those that meet every limit."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())]
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
