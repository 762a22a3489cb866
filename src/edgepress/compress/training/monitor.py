"""Watching a training run: one progress line on the console, the curves in the stage folder, and
the dashboards the recipe names (``tracking.report_to``).

Every Trainer-based run goes through ``monitored`` (from ``trainer.train_resumable``), so adapt,
finetune, distill (both phases) and each of prune's recoveries are watched the same way:

- the console: the Trainer's own progress bar prints each log as a raw dict between bars, and an
  evaluation bar at every evaluation; it is replaced by one line per run (steps, the last loss and
  validation metric). ``--debug`` logs every dict as well.
- ``curves.json`` in the stage folder: per logging step (loss, learning rate, gradient norm, loss
  terms), per evaluation and per epoch, for each training run of the stage; built from the
  Trainer's ``log_history``, which a resumed run restores from its checkpoint, so a killed and
  resumed run still has its whole curve. The HTML report plots it.
- dashboards: TensorBoard event files and an MLflow run per training run, through Transformers'
  own callbacks; any other integration Transformers has, by name. Each run is named
  ``<run>/<stage>[/<part>]`` and carries the resolved recipe (MLflow parameters ``recipe.*`` and a
  ``recipe.yaml`` artifact; TensorBoard text ``recipe``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgepress.running.scope import StageScope, current

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

log = logging.getLogger(__name__)

CURVES = "curves.json"
_SKIPPED_KEYS = ("epoch", "step", "total_flos")  # bookkeeping, not curves


def run_name(work: Path) -> str:
    """A training run's name on dashboards: the stage's label, plus the part when a stage trains
    more than once (``recovery-2``, ``distill-intermediate``)."""
    scope = current()
    stage = scope.label if scope else "edgepress"
    part = work.name
    return stage if scope is None or part == scope.stage else f"{stage}/{part}"


@contextlib.contextmanager
def monitored(trainer: "Trainer", work: Path) -> Iterator[None]:
    """Train under one progress line and the recipe's dashboards; write the curves afterwards."""
    from transformers.utils import logging as hf_logging

    quiet(trainer)
    scope = current()
    added = [_progress_class()(run_name(work)), *_dashboards(scope, work)]
    for callback in added:
        trainer.add_callback(callback)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # checkpoint saves draw "Writing model shards" bars over the line
    try:
        with _mlflow_environment(scope, work):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        for callback in added:  # an evaluation after training is the stage's own, not this run's
            trainer.remove_callback(callback)
    write_curves(work.parent.parent, work.name, trainer.state.log_history)


def quiet(trainer: "Trainer") -> None:
    """Without the Trainer's own bars (a raw dict per log, a bar per evaluation): for an evaluation
    outside training too."""
    from transformers import ProgressCallback

    trainer.remove_callback(ProgressCallback)


def _progress_class() -> type:
    """The progress callback's class, made when transformers is imported (never at module import)."""
    from transformers import TrainerCallback

    class _StageProgress(TrainerCallback):
        """One line per training run: steps done, the last training loss and validation metric."""

        def __init__(self, label: str) -> None:
            self.label, self.bar, self.shown = label, None, {}

        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, unit="step", dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            log.debug("%s step %d: %s", self.label, state.global_step, logs)
            if self.bar is None or not logs:
                return
            if "loss" in logs:
                self.shown["loss"] = f"loss {logs['loss']:.4g}"
            metric = f"eval_{args.metric_for_best_model}".replace("eval_eval_", "eval_")
            if metric in logs:
                self.shown["metric"] = f"validation {metric.removeprefix('eval_')} {logs[metric]:.4g}"
            self.bar.set_postfix_str(", ".join(self.shown[k] for k in ("loss", "metric") if k in self.shown), refresh=True)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return _StageProgress


# --------------------------------------------------------------------------- curves


def curves_of(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The Trainer's log history as three curves: per logging step, per evaluation, per epoch
    (mean training loss of the epoch, its last learning rate, the last evaluation within it)."""
    steps, evaluations = [], []
    for entry in log_history:
        values = {k: v for k, v in entry.items() if k not in _SKIPPED_KEYS and isinstance(v, (int, float)) and math.isfinite(v)}
        point = {"step": entry.get("step"), "epoch": round(entry.get("epoch") or 0.0, 4)}
        if "loss" in entry:
            steps.append({**point, **values})
        elif "eval_loss" in entry or any(k.startswith("eval_") for k in entry):
            evaluations.append({**point, **{k.removeprefix("eval_"): v for k, v in values.items() if not _is_speed(k)}})
    return {"steps": steps, "evaluations": evaluations, "epochs": _per_epoch(steps, evaluations)}


def _is_speed(key: str) -> bool:
    return key.endswith(("_runtime", "_per_second"))


def _per_epoch(steps: list[dict], evaluations: list[dict]) -> list[dict[str, Any]]:
    epochs = []
    last = max((p["epoch"] for p in steps + evaluations), default=0.0)
    for epoch in range(1, math.ceil(last - 1e-9) + 1):
        inside = [p for p in steps if epoch - 1 < p["epoch"] <= epoch + 1e-9]
        evaluated = [p for p in evaluations if p["epoch"] <= epoch + 1e-9]
        row: dict[str, Any] = {"epoch": epoch}
        if inside:
            row["loss"] = round(sum(p["loss"] for p in inside) / len(inside), 6)
            row["learning_rate"] = inside[-1].get("learning_rate")
        if evaluated:
            row["validation"] = {k: v for k, v in evaluated[-1].items() if k not in ("step", "epoch")}
        epochs.append(row)
    return epochs


def write_curves(stage_dir: Path, part: str, log_history: list[dict[str, Any]]) -> None:
    """Add (or replace) one training run's curves in the stage folder's curves.json."""
    from edgepress import distributed

    if not distributed.is_main():
        return
    path = stage_dir / CURVES
    document = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"runs": {}}
    document["runs"][part] = curves_of(log_history)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_curves(stage_dir: Path) -> dict[str, Any]:
    path = Path(stage_dir) / CURVES
    return json.loads(path.read_text(encoding="utf-8"))["runs"] if path.is_file() else {}


# --------------------------------------------------------------------------- dashboards


def _dashboards(scope: StageScope | None, work: Path) -> list["TrainerCallback"]:
    from edgepress import distributed

    if scope is None or not scope.recipe.tracking.report_to or not distributed.is_main():  # one process reports
        return []
    from transformers.integrations import get_reporting_integration_callbacks

    callbacks: list[Any] = []
    for name in scope.recipe.tracking.report_to:
        if name == "tensorboard":
            callbacks.append(_tensorboard(scope, work))
        else:
            callbacks += [cls() for cls in get_reporting_integration_callbacks([name])]
        if name == "mlflow":
            callbacks.append(_recipe_params_class()(scope))
    return callbacks


def tensorboard_dir(scope: StageScope, work: Path) -> Path:
    root = Path(scope.recipe.tracking.tensorboard_dir or scope.run_root / "tensorboard").expanduser()
    return root / scope.stage if work.name == scope.stage else root / scope.stage / work.name


def _tensorboard(scope: StageScope, work: Path) -> "TrainerCallback":
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    from edgepress.recipe.loading import recipe_to_yaml

    writer = SummaryWriter(log_dir=str(tensorboard_dir(scope, work)))
    writer.add_text("recipe", "```\n" + recipe_to_yaml(scope.recipe) + "```")
    return TensorBoardCallback(tb_writer=writer)


def mlflow_uri(scope: StageScope) -> str:
    """The recipe's URI, else MLflow's own variable, else a SQLite store in the run folder (MLflow 3
    keeps its file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set)."""
    tracking = scope.recipe.tracking
    if tracking.mlflow_tracking_uri:
        return tracking.mlflow_tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    scope.run_root.mkdir(parents=True, exist_ok=True)
    return _default_store(scope)


def _default_store(scope: StageScope) -> str:
    return "sqlite:///" + str((scope.run_root / "mlflow.db").resolve())


def _experiment_with_artifacts_in(uri: str, name: str, artifacts: Path) -> None:
    """Created here, not by Transformers' callback: MLflow gives a new experiment in a SQLite store
    the artifact root ``./mlruns`` of whatever directory the run starts in, which would put the run's
    artifacts outside its folder."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())
    except MlflowException:
        if client.get_experiment_by_name(name) is None:  # not a concurrent stage creating it first
            raise


@contextlib.contextmanager
def _mlflow_environment(scope: StageScope | None, work: Path) -> Iterator[None]:
    """Transformers' MLflow callback takes its URI, experiment and tags from the environment."""
    if scope is None or "mlflow" not in scope.recipe.tracking.report_to:
        yield
        return
    uri, experiment = mlflow_uri(scope), scope.recipe.tracking.experiment or scope.recipe.name
    if uri == _default_store(scope):
        _experiment_with_artifacts_in(uri, experiment, scope.run_root / "mlartifacts")
    values = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_TAGS": json.dumps({"edgepress.run": scope.recipe.name, "edgepress.stage": scope.stage, "edgepress.part": work.name}),
    }
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def flat_params(tree: dict[str, Any], prefix: str = "recipe") -> dict[str, str]:
    """A nested recipe as MLflow parameters: ``recipe.finetune.learning_rate`` -> ``"5e-05"``."""
    params: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            params.update(flat_params(value, name))
        else:
            params[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return params


def _recipe_params_class() -> type:
    from transformers import TrainerCallback

    class _RecipeParams(TrainerCallback):
        """After Transformers' MLflow callback has started the run: the resolved recipe as its parameters."""

        def __init__(self, scope: StageScope) -> None:
            self.scope = scope

        def on_train_begin(self, args, state, control, **kwargs):
            import mlflow
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

            from edgepress.recipe.loading import recipe_to_yaml

            if not state.is_world_process_zero or mlflow.active_run() is None:
                return
            items = [(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in flat_params(self.scope.recipe.model_dump(mode="json")).items()]
            for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
                mlflow.log_params(dict(items[start : start + MAX_PARAMS_TAGS_PER_BATCH]))
            mlflow.log_text(recipe_to_yaml(self.scope.recipe), "recipe.yaml")

    return _RecipeParams
