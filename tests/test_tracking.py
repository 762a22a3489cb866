"""Issue 34: training curves in the run folder, TensorBoard and MLflow (real readers, real stores),
and one clean progress line per training run on the console."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_recipe

from edgepress.running.pipeline import run_recipe


def _with(recipe, **sections):
    return recipe.model_copy(update={k: type(getattr(recipe, k)).model_validate(v) for k, v in sections.items()})


def test_curves_per_step_evaluation_and_epoch():
    from edgepress.compress.training.monitor import curves_of

    history = [
        {"loss": 1.0, "learning_rate": 0.1, "grad_norm": 2.0, "epoch": 0.5, "step": 5},
        {"loss": 0.6, "learning_rate": 0.08, "grad_norm": 1.0, "epoch": 1.0, "step": 10},
        {"eval_loss": 0.7, "eval_accuracy": 0.5, "eval_runtime": 0.1, "eval_samples_per_second": 9.0, "epoch": 1.0, "step": 10},
        {"loss": 0.2, "learning_rate": 0.02, "grad_norm": 0.5, "epoch": 1.5, "step": 15},
        {"eval_loss": 0.3, "eval_accuracy": 0.9, "epoch": 2.0, "step": 20},
        {"train_runtime": 3.0, "train_loss": 0.6, "epoch": 2.0, "step": 20, "total_flos": 1e9},
    ]
    curves = curves_of(history)
    assert [p["step"] for p in curves["steps"]] == [5, 10, 15]
    assert curves["evaluations"] == [
        {"step": 10, "epoch": 1.0, "loss": 0.7, "accuracy": 0.5},  # no timings: they are not curves
        {"step": 20, "epoch": 2.0, "loss": 0.3, "accuracy": 0.9},
    ]
    assert curves["epochs"] == [
        {"epoch": 1, "loss": 0.8, "learning_rate": 0.08, "validation": {"loss": 0.7, "accuracy": 0.5}},
        {"epoch": 2, "loss": 0.2, "learning_rate": 0.02, "validation": {"loss": 0.3, "accuracy": 0.9}},
    ]


@pytest.mark.slow
def test_tensorboard_and_mlflow_receive_each_training_run(tmp_path, tiny_csv, tiny_bert, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    elsewhere = tmp_path / "elsewhere"  # the directory the run starts in gets nothing
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = _with(tiny_recipe(tmp_path, tiny_bert, tiny_csv, epochs=2, logging_steps=10), tracking={"report_to": ["tensorboard", "mlflow"]})
    (outcome,) = run_recipe(recipe)
    curves = json.loads((outcome.folder / "curves.json").read_text())["runs"]["finetune"]
    run_root = tmp_path / "runs" / "tiny"

    events = EventAccumulator(str(run_root / "tensorboard" / "finetune"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [p["step"] for p in curves["steps"]]
    assert [round(e.value, 4) for e in events.Scalars("eval/accuracy")] == [round(p["accuracy"], 4) for p in curves["evaluations"]]
    (recipe_text,) = events.Tensors("recipe/text_summary")
    assert "learning_rate: 0.002" in recipe_text.tensor_proto.string_val[0].decode()

    client = MlflowClient(f"sqlite:///{run_root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.run_name == "tiny/finetune" and run.data.tags["edgepress.stage"] == "finetune"
    assert run.data.params["recipe.finetune.learning_rate"] == str(recipe.finetune.learning_rate)
    assert run.data.params["recipe.data.source"] == str(tiny_csv)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [p["step"] for p in curves["steps"]]
    saved = client.download_artifacts(run.info.run_id, "recipe.yaml", str(tmp_path / "artifacts"))
    assert yaml.safe_load(open(saved).read())["finetune"]["epochs"] == 2
    assert list((run_root / "mlartifacts").rglob("recipe.yaml")) and not list(elsewhere.iterdir())


@pytest.mark.slow
def test_a_stage_that_trains_twice_is_two_runs_in_an_mlflow_file_store(tmp_path, tiny_csv, tiny_classifier, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    store = (tmp_path / "mlruns").as_uri()
    recipe = tiny_recipe(tmp_path, tiny_classifier, tiny_csv)
    recipe = _with(
        recipe.model_copy(update={"stages": ["distill"]}),
        tracking={"report_to": ["mlflow"], "mlflow_tracking_uri": store, "experiment": "staged"},
        distill={"epochs": 1, "intermediate_epochs": 1, "max_seq_length": 24, "learning_rate": 2e-3, "logging_steps": 5,
                 "student": {"num_layers": 1}, "loss": {"hidden_weight": 1.0}},
    )  # fmt: skip
    (outcome,) = run_recipe(recipe)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("staged").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["tiny/distill", "tiny/distill/distill-intermediate"]
    curves = json.loads((outcome.folder / "curves.json").read_text())["runs"]
    assert set(curves) == {"distill", "distill-intermediate"}
    assert not (tmp_path / "runs" / "tiny" / "tensorboard").exists()  # only what report_to names


@pytest.mark.slow
def test_console_shows_one_progress_line_per_run_and_debug_shows_the_logs(tmp_path, tiny_csv, tiny_bert):
    recipe = tiny_recipe(tmp_path, tiny_bert, tiny_csv, epochs=1, logging_steps=5).model_dump(mode="json")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    command = [sys.executable, "-m", "edgepress", "run", str(path)]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    output = quiet.stdout + quiet.stderr
    assert "tiny/finetune" in output and "validation accuracy" in output
    for noise in ("{'loss'", "'eval_loss'", "Writing model shards", "Loading weights", "tokenizing"):
        assert noise not in output, noise
    loud = subprocess.run([sys.executable, "-m", "edgepress", "--debug", "run", str(path), "--force"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "'eval_loss'" in loud.stdout + loud.stderr
