import json
from importlib.metadata import version

import pytest
import torch
from conftest import tiny_recipe

from edgepress.errors import StageError
from edgepress.running.pipeline import run_recipe
from edgepress.running.runs import MANIFEST


@pytest.fixture(scope="module")
def finetuned(tiny_bert, tiny_csv, tmp_path_factory):
    """One real fine-tuning run of the tiny model, shared by the tests that only read its outputs."""
    tmp = tmp_path_factory.mktemp("finetune")
    recipe = tiny_recipe(tmp, tiny_bert, tiny_csv)
    return recipe, run_recipe(recipe)


def test_finetune_learns_the_synthetic_task(finetuned):
    _, (outcome,) = finetuned
    metrics = outcome.manifest["metrics"]
    assert not outcome.skipped
    assert metrics["validation"]["accuracy"] >= 0.9
    assert metrics["test"]["accuracy"] >= 0.9
    assert 0 < metrics["test"]["f1_macro"] <= 1
    assert metrics["train"]["steps"] == 216  # 420 training rows / batch 16 = 27 steps x 8 epochs


def test_artifact_opens_with_plain_transformers(finetuned):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, (outcome,) = finetuned
    model = AutoModelForSequenceClassification.from_pretrained(outcome.folder)
    tokenizer = AutoTokenizer.from_pretrained(outcome.folder)
    assert model.config.id2label == {0: "politics", 1: "sports", 2: "tech"}
    with torch.no_grad():
        logits = model(**tokenizer(["w3 w4 goal w5", "w1 vote w2"], return_tensors="pt", padding=True)).logits
    assert logits.argmax(-1).tolist() == [1, 0]
    assert not [p for p in outcome.folder.iterdir() if p.name.startswith(("checkpoint", ".trainer"))]


def test_manifest_records_config_inputs_outputs_metrics_and_versions(finetuned):
    recipe, (outcome,) = finetuned
    manifest = json.loads((outcome.folder / MANIFEST).read_text())
    assert manifest["stage"] == "finetune"
    assert manifest["config"]["finetune"]["learning_rate"] == recipe.finetune.learning_rate
    assert set(manifest["inputs"]) == {"model", "data"}
    assert "model.safetensors" in manifest["outputs"] and len(manifest["outputs"]["model.safetensors"]) == 64
    assert manifest["environment"]["packages"]["torch"] == version("torch")
    assert manifest["wall_time_s"] > 0
    assert (outcome.folder.parent / "recipe.yaml").is_file()


def test_second_run_skips_and_config_change_or_force_reruns(finetuned):
    recipe, (first,) = finetuned
    weights = first.folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    (again,) = run_recipe(recipe)
    assert again.skipped and weights.stat().st_mtime_ns == stamp
    assert again.manifest["metrics"] == first.manifest["metrics"]
    changed = recipe.model_copy(update={"finetune": recipe.finetune.model_copy(update={"max_steps": 2})})
    (rerun,) = run_recipe(changed)
    assert not rerun.skipped and rerun.manifest["metrics"]["train"]["steps"] == 2
    (forced,) = run_recipe(changed, force=True)
    assert not forced.skipped


def test_frozen_embeddings_and_layers_do_not_change(tiny_bert, tiny_csv, tmp_path):
    from safetensors.torch import load_file

    recipe = tiny_recipe(tmp_path, tiny_bert, tiny_csv, freeze_embeddings=True, freeze_layers=1, max_steps=3)
    (outcome,) = run_recipe(recipe)
    before, after = load_file(str(tiny_bert / "model.safetensors")), load_file(str(outcome.folder / "model.safetensors"))
    for name, tensor in before.items():
        if name.startswith(("embeddings.", "encoder.layer.0.")):
            assert torch.equal(tensor, after[f"bert.{name}"]), name
    assert not torch.equal(before["encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])
    trainable = outcome.manifest["metrics"]["train"]["trainable_parameters"]
    assert trainable < outcome.manifest["metrics"]["parameters"]


def test_freezing_more_layers_than_exist_fails_and_writes_nothing(tiny_bert, tiny_csv, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_bert, tiny_csv, freeze_layers=5)
    with pytest.raises(StageError, match="freeze_layers is 5 but the model has 2 layers"):
        run_recipe(recipe)
    assert not (tmp_path / "runs" / "tiny").exists()  # no stage finished: the run claimed no folder (issue 27)


def test_early_stopping_ends_training_before_the_last_epoch(tiny_bert, tiny_csv, tmp_path):
    # a learning rate of ~0 cannot improve validation accuracy, so patience 1 stops after 2 evaluations
    recipe = tiny_recipe(tmp_path, tiny_bert, tiny_csv, learning_rate=1e-12, epochs=6, early_stopping_patience=1)
    (outcome,) = run_recipe(recipe)
    assert outcome.manifest["metrics"]["train"]["steps"] < 6 * 27
