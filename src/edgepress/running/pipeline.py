"""Running a recipe: each stage reads the previous artifact and writes its own, or is skipped
when its manifest shows the same config and inputs (resume)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edgepress import distributed
from edgepress.data.load import SplitData, load_data
from edgepress.data.sources import describe_source
from edgepress.errors import RecipeError, StageError
from edgepress.models import is_local, resolve_source
from edgepress.recipe.loading import Recipe, recipe_to_yaml
from edgepress.recipe.stages import get_stage
from edgepress.running.lock import run_lock
from edgepress.running.runs import (
    MANIFEST,
    MANIFEST_SCHEMA,
    RunFolder,
    current_manifest,
    drop_checkpoints,
    environment,
    file_hashes,
    fingerprint,
    partial_dir,
    read_manifest,
    tree_hash,
    write_manifest,
)
from edgepress.running.scope import check_report_to, stage_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets: the recipe, the data, where to read and where to write."""

    recipe: Recipe
    data: SplitData
    input_model: str  # the recipe's model source for the first stage, else the previous artifact folder
    input_hash: str  # hash of the input model's files (or its Hub id and revision)
    out_dir: Path  # temporary folder; renamed into place when the stage returns


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    folder: Path
    manifest: dict[str, Any]
    skipped: bool


# where a stage's artifact lives: (position in the recipe, stage name, fingerprint) -> folder
Placement = Callable[[int, str, str], Path]


def run_recipe(
    recipe: Recipe,
    force: bool = False,
    place: Placement | None = None,
    after_stage: Callable[[StageOutcome], None] | None = None,
    origin: str = "",
) -> list[StageOutcome]:
    """Run (or resume) the recipe's stages in order. ``place`` puts each stage's folder elsewhere
    than ``NN-stage`` in the run folder: keyed by fingerprint, the folders of many recipes that
    share a prefix of stages are shared, so each is computed once (what a search needs).
    ``after_stage`` sees each outcome as it comes; what it raises ends the run there (a search
    stops a trial that can no longer meet its limits). ``origin`` names where the recipe came from
    (its file, or the command): a run from elsewhere never replaces this run's finished stages
    without ``force``."""
    run = RunFolder(Path(recipe.output_dir) / recipe.name)
    with run_lock(run.root) if distributed.is_main() else contextlib.nullcontext():
        guard = None if place is not None or force else _Guard.of(run, recipe, origin)
        return _run_stages(recipe, run, force, place, after_stage, guard, origin)


def _run_stages(
    recipe: Recipe, run: RunFolder, force: bool, place: Placement | None, after_stage, guard: "_Guard | None", origin: str
) -> list[StageOutcome]:
    check_report_to(recipe.tracking.report_to)
    data = load_data(recipe.data, recipe.task)
    log.info("data %s: %s", describe_source(recipe.data), data.describe())
    source = resolve_source(recipe.model.name_or_path)
    source_hash = _source_hash(source, recipe)
    outcomes = []
    for index, name in enumerate(recipe.stages, start=1):
        config = stage_config(recipe, name, reads_model_section=index == 1)
        inputs = {"model": source_hash, "data": data.fingerprint, **environment_facts(recipe, name)}
        expected = fingerprint(name, config, inputs)
        folder = place(index, name, expected) if place else run.stage_dir(index, name)
        distributed.barrier()  # every process sees the previous stage in place before deciding
        manifest = None if force else current_manifest(folder, expected)
        skipped = manifest is not None
        if skipped:
            log.info("%s: skipped, up to date (config and inputs match its manifest; --force re-runs it)", folder)
        else:
            if guard:
                guard.check_replace(folder)
            context = StageContext(recipe, data, source, source_hash, folder)
            manifest = _run_stage(run, context, name, config, inputs, expected)
        if not outcomes and distributed.is_main() and place is None:
            # the run claims its folder once it has an artifact there: a run that failed before
            # writing one leaves nothing that would refuse the corrected re-run
            run.write_text("recipe.yaml", _origin_line(origin) + recipe_to_yaml(recipe))
        outcomes.append(StageOutcome(name, folder, manifest, skipped))
        if after_stage:
            after_stage(outcomes[-1])
        source, source_hash = str(folder), manifest["artifact_hash"]
    return outcomes


ORIGIN_PREFIX = "# edgepress run of "


def _origin_line(origin: str) -> str:
    return f"{ORIGIN_PREFIX}{origin}\n" if origin else ""


@dataclass(frozen=True)
class _Guard:
    """What a run folder holds already, and where this run's recipe came from: a run folder holds
    one model on one dataset, and the finished stages of one recipe."""

    run: RunFolder
    origin: str
    previous_origin: str  # '' when unknown (no recipe.yaml, or one written before origins were recorded)

    @classmethod
    def of(cls, run: RunFolder, recipe: Recipe, origin: str) -> "_Guard":
        previous = _previous_recipe(run)
        if previous is not None:
            _check_same_model_and_data(run, recipe, previous[0])
        return cls(run, origin, previous[1] if previous else "")

    def check_replace(self, folder: Path) -> None:
        """A finished stage of another recipe's run would be replaced by this one: refuse. A rerun
        of the same recipe (same file, or the same stage command) replaces a stage whose config
        changed, as it always has: that is how a recipe is iterated on."""
        if not (folder / MANIFEST).is_file() or not self.previous_origin or self.previous_origin == self.origin:
            return
        raise RecipeError(
            f"run folder {self.run.root} holds a finished run of {self.previous_origin}, and this run of {self.origin or 'another recipe'} "
            f"would replace its {folder.name} (another config); give this run another name (--name, or name: in the recipe), "
            "or --force to replace that run"
        )


def _previous_recipe(run: RunFolder) -> tuple[dict, str] | None:
    """The recipe.yaml of the run folder's last run and the origin it records, if edgepress wrote it."""
    import yaml

    previous_file = run.root / "recipe.yaml"
    if not previous_file.is_file():
        return None
    text = previous_file.read_text(encoding="utf-8")
    try:
        previous = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None  # not a recipe edgepress wrote: nothing to compare with
    first = text.splitlines()[0] if text else ""
    return (previous if isinstance(previous, dict) else {}), first.removeprefix(ORIGIN_PREFIX) if first.startswith(ORIGIN_PREFIX) else ""


def _check_same_model_and_data(run: RunFolder, recipe: Recipe, previous: dict) -> None:
    """A recipe with another model or other data under the same name would replace that run's
    stages one by one, mixing two experiments meanwhile."""
    try:
        before = (previous["model"]["name_or_path"], previous["data"]["source"])
    except (KeyError, TypeError):
        return
    now = (recipe.model.name_or_path, recipe.data.source)
    if before != now:
        raise RecipeError(
            f"run folder {run.root} holds a run of model {before[0]} on data {before[1]}, and this recipe uses model "
            f"{now[0]} on data {now[1]}; give this run another name (--name, or name: in the recipe), or --force to replace that run"
        )


def stage_config(recipe: Recipe, stage: str, reads_model_section: bool) -> dict[str, Any]:
    """The part of the recipe a stage depends on; a change anywhere else does not re-run it."""
    config: dict[str, Any] = {stage: getattr(recipe, stage).model_dump(mode="json"), "seed": recipe.seed}
    config["data"] = recipe.data.model_dump(mode="json")
    if reads_model_section:
        config["model"] = recipe.model.model_dump(mode="json")
    return config


def _run_stage(
    run: RunFolder, context: StageContext, name: str, config: dict[str, Any], inputs: dict[str, str], expected: str
) -> dict[str, Any]:
    if not distributed.is_main():
        return _follow_stage(context, name, expected)
    log.info("%s: running %s", context.out_dir, name)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    with run.staging(context.out_dir, expected) as partial:
        distributed.barrier()  # 1: the partial folder is ready for the other processes
        # through JSON and back, so that a fresh manifest equals the one a later run reads from disk
        with stage_scope(name, context.recipe):
            metrics = json.loads(json.dumps(get_stage(name).load()(replace(context, out_dir=partial)), default=str))
        distributed.barrier()  # 2: every process has finished the stage
        drop_checkpoints(partial)
        outputs = file_hashes(partial)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "stage": name,
            "fingerprint": expected,
            "config": config,
            "inputs": inputs,
            "input_model": context.input_model,
            "outputs": outputs,
            "artifact_hash": tree_hash(outputs),
            "metrics": metrics,
            "started_at": started_at,
            "wall_time_s": round(time.perf_counter() - start, 2),
            "environment": environment(),
        }
        write_manifest(partial, manifest)
    distributed.barrier()  # 3: the artifact is in place
    return manifest


def _follow_stage(context: StageContext, name: str, expected: str) -> dict[str, Any]:
    """A process other than the main one: trains with it (DDP), writes nothing, reads its manifest."""
    spec = get_stage(name)
    distributed.barrier()  # 1
    if spec.every_process:
        with stage_scope(name, context.recipe):
            spec.load()(replace(context, out_dir=partial_dir(context.out_dir, expected)))
    distributed.barrier()  # 2
    distributed.barrier()  # 3
    manifest = read_manifest(context.out_dir)
    if manifest is None:
        raise StageError(f"{context.out_dir}: the main process wrote no manifest; see its log for the error")
    return manifest


def environment_facts(recipe: Recipe, stage: str) -> dict[str, str]:
    """Facts of this machine, beyond the installed packages, that change a stage's output: each
    stage names its own in the registry, so the pipeline needs to know no stage's code."""
    return get_stage(stage).environment_facts(recipe)


def _source_hash(source: str, recipe: Recipe) -> str:
    if is_local(source):
        return tree_hash(file_hashes(Path(source)))
    return f"hub:{source}@{recipe.model.revision or 'default-branch'}"
