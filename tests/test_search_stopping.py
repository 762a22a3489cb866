"""Issue 16, second part: trials that cannot meet the limits stop early (the architecture probe, the
accuracy floor), `search show`, the plot and JSON, test scores for the front only, and a search
killed mid-trial that resumes from its storage."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from test_search import run_raw, trim_and_export
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.compress.pruning import surgery
from edgepress.recipe.loading import validate_recipe
from edgepress.running.pipeline import run_recipe
from edgepress.search.space import parse_space
from edgepress.search.stopping import EarlyStop, architecture_key
from edgepress.search.study import Plan, done_trials, open_storage, run_study

runner = CliRunner()
TEXTS = ["goal w1 w2 team", "vote w3 party w4 w5 w6", "chip code w7"] * 4


def prune_recipe(tmp_path, model, data, **prune):
    return validate_recipe({
        "name": "shape", "output_dir": str(tmp_path / "runs"), "stages": ["prune", "export", "quantize"],
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "prune": {"steps": 1, "epochs": 1, "learning_rate": 2e-3, "max_seq_length": 24, **prune},
        "export": {"max_seq_length": 24, "mobile": False}, "quantize": {"max_seq_length": 24, "static": False},
    })  # fmt: skip


@pytest.mark.parametrize("prune", [{"heads": 0.5, "ffn": 0.25, "drop_layers": [1]}, {"heads": 0.5, "ffn": 0.5, "head_scope": "global"}])
def test_the_probe_has_the_shape_the_prune_stage_produces(tmp_path, tiny_classifier, tiny_csv, prune):
    from edgepress.data.load import load_data
    from edgepress.models import load_artifact
    from edgepress.search.probe import prune_like

    recipe = prune_recipe(tmp_path, tiny_classifier, tiny_csv, **prune)
    pruned = run_recipe(recipe.model_copy(update={"stages": ["prune"]}))[0].manifest["metrics"]["after"]
    model, _ = load_artifact(tiny_classifier)
    prune_like(model, recipe)
    probed = surgery.describe(model, 24)
    assert probed["heads_per_layer"] == pruned["heads_per_layer"] and probed["ffn_per_layer"] == pruned["ffn_per_layer"]
    assert probed["parameters"] == pruned["parameters"]  # heads only differ in which, not in how many
    from edgepress.search.probe import probe_file

    path = probe_file(recipe, load_data(recipe.data), tmp_path / "probe")
    assert path.name == "model_int8_dynamic.onnx"  # what the quantize stage deploys and the search times
    from edgepress.export.runtime import load_onnx, op_counts

    ops = op_counts(load_onnx(path))
    assert ops.get("MatMulInteger", 0) > 0 and ops.get("QAttention", 0) > 0 and ops.get("Attention", 0) == 0  # int8, as quantize deploys


def test_a_distilled_probe_has_the_students_depth_and_a_budget_is_not_probed(tmp_path, tiny_classifier, tiny_csv):
    from edgepress.data.load import load_data
    from edgepress.export.runtime import load_onnx, op_counts
    from edgepress.search.probe import probe_file

    base = prune_recipe(tmp_path, tiny_classifier, tiny_csv, heads=0.5, ffn=0.5)
    recipe = validate_recipe({**base.model_dump(mode="json"), "stages": ["distill", "prune", "export"], "distill": {"student": {"num_layers": 1}}})
    path = probe_file(recipe, load_data(recipe.data), tmp_path / "probe")
    assert path.name == "model_optimized.onnx" and op_counts(load_onnx(path)).get("Attention") == 1
    budget = validate_recipe({**base.model_dump(mode="json", exclude={"prune": {"heads", "ffn"}}),
                              "prune": {"budget": {"metric": "params", "keep": 0.5}, "importance": {"ffn": "taylor"}}})  # fmt: skip
    assert probe_file(budget, load_data(recipe.data), tmp_path / "budget") is None
    # the probe's key follows the shape, not the training values
    faster = validate_recipe({**base.model_dump(mode="json"), "prune": {**base.prune.model_dump(mode="json"), "learning_rate": 1e-4}})
    assert architecture_key(faster) == architecture_key(base) != architecture_key(budget)


def reference_timer(tmp_path, model, data):
    from edgepress.search.latency import ReferenceTimer

    reference = run_raw({**trim_and_export(tmp_path, model, data, "reference")})[-1].folder / "model_optimized.onnx"
    return ReferenceTimer(reference, TEXTS, max_length=24, rounds=2)


@pytest.mark.parametrize("limit", ["latency_ms", "latency_ratio"])
def test_an_architecture_over_the_latency_limit_stops_before_any_stage_runs(tmp_path, tiny_classifier, tiny_csv, limit):
    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "slow")
    space = parse_space({"prune.vocabulary.min_count": [1, 2]}, base)  # two trials, one architecture
    timer = reference_timer(tmp_path, tiny_classifier, tiny_csv)
    stop = EarlyStop(max_latency_ms=1e-6, floor=None, timer=timer) if limit == "latency_ms" else EarlyStop(None, None, timer=timer, max_latency_ratio=1e-6)
    study = run_study(base, space, Plan(limits=((limit, 1e-6),), trials=2), f"sqlite:///{tmp_path / 's.db'}", timer, stop=stop)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all("architecture measures" in t.user_attrs["stopped"] for t in study.trials)
    assert not (tmp_path / "runs" / "slow" / "stages").exists()  # no stage ran
    probes = [k for k in study.user_attrs if k.startswith("probe:")]
    assert len(probes) == 1 and study.trials[1].user_attrs["probe_latency_ms"] == study.user_attrs[probes[0]]
    assert len(done_trials(study)) == 2  # stopped trials count towards the total


def test_accuracy_below_the_floor_stops_the_trial_after_that_stage(tmp_path, tiny_classifier, tiny_csv):
    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "floor")
    space = parse_space({"export.optimize": [True]}, base)
    stop = EarlyStop(max_latency_ms=None, floor=1.5)  # no accuracy reaches 1.5: the prune stage's fails it
    study = run_study(base, space, Plan(objectives=("accuracy", "size_mb"), trials=1), f"sqlite:///{tmp_path / 'f.db'}", stop=stop)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and "after prune, below the floor 1.5000" in trial.user_attrs["stopped"]
    assert [p.name.split("-")[0] for p in (tmp_path / "runs" / "floor" / "stages").iterdir()] == ["prune"]  # export never ran
    # the last stage is judged by the limits, never stopped: a floor it misses leaves a complete, infeasible trial
    alone = {**base, "name": "floor2", "stages": ["prune"]}
    kept = run_study(alone, space, Plan(objectives=("accuracy", "size_mb"), limits=(("min_accuracy", 1.0),), trials=1),
                     f"sqlite:///{tmp_path / 'f.db'}", stop=EarlyStop(None, floor=1.5))  # fmt: skip
    assert kept.trials[0].state == optuna.trial.TrialState.COMPLETE and "stopped" not in kept.trials[0].user_attrs


def test_a_drop_from_the_reference_becomes_an_accuracy_floor():
    from edgepress.recipe.search import SearchSection

    section = SearchSection(space={"prune.heads": [0.5]}, objectives=["accuracy", "size_mb"], max_accuracy_drop=1.0, reference="r.onnx", min_accuracy=0.5)
    assert section.limits({"accuracy": 0.9}) == (("min_accuracy", pytest.approx(0.89)),)
    assert SearchSection(space={"prune.heads": [0.5]}, objectives=["accuracy"], max_accuracy_drop=5.0, reference="r.onnx").limits({"accuracy": 0.52}) == (
        ("min_accuracy", pytest.approx(0.47)),
    )
    ratio = SearchSection(space={"prune.heads": [0.5]}, objectives=["accuracy"], max_latency_ratio=0.85, reference="r.onnx")
    assert ratio.timed and ratio.limits() == (("latency_ratio", 0.85),)
    with pytest.raises(ValueError, match="set search.reference"):
        SearchSection(space={"prune.heads": [0.5]}, objectives=["accuracy"], max_latency_ratio=0.85)
    with pytest.raises(ValueError, match="max_accuracy_drop counts from the reference model's score"):
        SearchSection(space={"prune.heads": [0.5]}, objectives=["accuracy"], max_accuracy_drop=1.0)


def search_yaml(tmp_path, tiny_classifier, tiny_csv, name: str, prune: dict | None = None, **search) -> str:
    raw = trim_and_export(tmp_path, tiny_classifier, tiny_csv, name)
    raw["prune"].update(prune or {})
    raw["search"] = {"space": {"export.optimize": [True, False], "prune.vocabulary.min_count": [1, 2]},
                     "objectives": ["accuracy", "size_mb"], "sampler": "grid", "trials": 3, **search}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_show_reads_a_study_and_the_front_gets_test_scores_plot_and_json(tmp_path, tiny_classifier, tiny_csv):
    path = search_yaml(tmp_path, tiny_classifier, tiny_csv, "shown", trials=2)
    missing = runner.invoke(app, ["search", "show", path])
    assert missing.exit_code == 2 and "no study at" in missing.output and "run edgepress search" in missing.output
    result = runner.invoke(app, ["search", path])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "shown"
    document = json.loads((run / "search.json").read_text())
    assert [t["trial"] for t in document["trials"]] == [0, 1] and all(t["state"] == "complete" for t in document["trials"])
    front = document["front"]
    assert front and all(f["test"]["accuracy"] >= 0.9 and "accuracy" in f["validation"] for f in front)
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    shown = runner.invoke(app, ["search", "show", path])
    assert shown.exit_code == 0 and "shown: 2 trials" in shown.output and "test accuracy" in shown.output
    assert "search trial" not in shown.output  # reading a study runs nothing
    wrong = runner.invoke(app, ["search", "show", path, "--storage", f"sqlite:///{tmp_path / 'other.db'}"])
    assert wrong.exit_code == 2 and "holds no study named 'shown'" in wrong.output
    bad = runner.invoke(app, ["search", path, "--timeout", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output


def test_a_killed_search_resumes_without_repeating_finished_trials_and_reruns_the_killed_one(tmp_path, tiny_classifier, tiny_csv):
    slower = {"heads": 0.5, "steps": 1, "epochs": 3, "learning_rate": 2e-3}  # a few seconds a trial: time to kill one
    space = {"prune.vocabulary.min_count": [1, 2, 3], "export.optimize": [True]}  # no trial reuses another's prune
    path = search_yaml(tmp_path, tiny_classifier, tiny_csv, "killed", prune=slower, heartbeat_s=1, space=space)
    storage = f"sqlite:///{tmp_path / 'runs' / 'killed' / 'study.db'}"
    process = subprocess.Popen([sys.executable, "-m", "edgepress", "search", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        killed = _kill_during_second_trial(process, storage)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = _study(storage).trials[0]
    started = json.loads((tmp_path / "runs" / "killed" / "stages").joinpath(_final(first)).joinpath("edgepress.json").read_text())["started_at"]
    time.sleep(3.5)  # two heartbeats missed (SQLite's clock counts whole seconds): the killed trial is stale
    result = runner.invoke(app, ["search", path])
    assert result.exit_code == 0, result.output
    study = _study(storage)
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == optuna.trial.TrialState.FAIL and "error" not in study.trials[killed].user_attrs
    rerun = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(rerun) == 1 and rerun[0].params == study.trials[killed].params and rerun[0].state == optuna.trial.TrialState.COMPLETE
    assert len(done_trials(study)) == 3 and sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) == 3
    assert f"re-run of trial {killed}" in result.output and "interrupted" in result.output
    again = json.loads((tmp_path / "runs" / "killed" / "stages").joinpath(_final(first)).joinpath("edgepress.json").read_text())
    assert again["started_at"] == started  # trial 0's stages were not run again


def _kill_during_second_trial(process, storage: str) -> int:
    """SIGKILL the search once a trial has finished and the next is running; returns the killed trial."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = _study(storage).trials
        except Exception:  # the database or the study is not created yet, or is being written (locked)
            trials = []
        running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if running and any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and has_heartbeat(storage, "killed", running[0]):
            os.killpg(process.pid, signal.SIGKILL)
            return running[0]
        time.sleep(0.1)
    pytest.fail(f"the search never had a finished and a running trial at once (exit code {process.poll()})")


def has_heartbeat(url: str, study: str, number: int) -> bool:
    """Whether the trial's heartbeat is in the storage. Optuna only fails a RUNNING trial whose
    heartbeat went stale: one killed before its first beat (the heartbeat thread starts after the
    trial is created; under load that takes a while) stays RUNNING for good, so a kill waits."""
    import sqlalchemy

    query = sqlalchemy.text(  # Optuna's RDB schema
        "SELECT 1 FROM trials t JOIN studies s ON s.study_id = t.study_id JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
        " WHERE s.study_name = :study AND t.number = :number"
    )
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(query, {"study": study, "number": number}).first() is not None
    except sqlalchemy.exc.OperationalError:  # being written (locked): ask again on the next poll
        return False
    finally:
        engine.dispose()


def _study(storage: str) -> "optuna.Study":
    return optuna.load_study(study_name="killed", storage=open_storage(storage, 1))


def _final(trial) -> str:
    from pathlib import Path

    return Path(trial.user_attrs["final_folder"]).name


def test_two_workers_on_one_storage_stop_when_the_study_is_full(tmp_path, tiny_classifier, tiny_csv):
    """The scale-out path: two processes with their own run folders (as on two machines) share one
    study through its storage URL, and stop once it holds the requested trials between them."""
    slower = {"heads": 0.5, "steps": 1, "epochs": 3, "learning_rate": 2e-3}
    space = {"prune.vocabulary.min_count": [1, 2, 3, 4, 5, 6], "export.optimize": [True]}
    path = search_yaml(tmp_path, tiny_classifier, tiny_csv, "shared", prune=slower, space=space, sampler="random", trials=3)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    # the first worker creates the database's tables; workers started at the same instant would race to (as documented)
    optuna.create_study(study_name="shared", storage=open_storage(storage, 60), directions=["maximize", "minimize"])
    workers = [
        subprocess.Popen([sys.executable, "-m", "edgepress", "search", path, "--storage", storage, "--set", f"output_dir={tmp_path / m}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for m in ("a", "b")
    ]  # fmt: skip
    errors = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    study = optuna.load_study(study_name="shared", storage=storage)
    # alone, each would have run 3; together they stop at 3, plus at most the one still running in the other
    assert 3 <= len(done_trials(study)) <= 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_quantize_stage_records_macro_f1_for_the_objective(tmp_path, tiny_classifier, tiny_csv):
    base = trim_and_export(tmp_path, tiny_classifier, tiny_csv, "f1")
    base.update(stages=["prune", "export", "quantize"], quantize={"max_seq_length": 24, "static": False})
    study = run_study(base, parse_space({"export.optimize": [True]}, base), Plan(objectives=("f1_macro",), trials=1), f"sqlite:///{tmp_path / 'f1.db'}")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    manifest = json.loads(next((tmp_path / "runs").rglob("quantize-*/edgepress.json")).read_text())
    assert trial.values == [manifest["metrics"]["validation"]["f1_macro"]]
    assert len(done_trials(study)) == 1
