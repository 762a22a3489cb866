"""A CoNLL file through every stage with one recipe (token classification): finetune, distill,
prune with vocabulary trimming, export, quantize (dynamic and static), bench. Real Trainer, real
ONNX Runtime, the tiny BERT and the tiny tagged sentences of conftest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_schema_valid

from edgepress.models import from_pretrained

TRAINING = {"learning_rate": 3e-3, "epochs": 6, "batch_size": 16, "max_seq_length": 24, "logging_steps": 50}


@pytest.fixture(scope="module")
def tagged_run(tmp_path_factory, tiny_ner_bert, tiny_conll) -> dict[str, Path]:
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    root = tmp_path_factory.mktemp("token-run")
    recipe = validate_recipe({
        "name": "ner", "output_dir": str(root / "runs"), "task": "token-classification",
        "stages": ["finetune", "distill", "prune", "export", "quantize", "bench"],
        "model": {"name_or_path": str(tiny_ner_bert)}, "data": {"source": str(tiny_conll)},
        "finetune": TRAINING, "distill": {**TRAINING, "student": {"num_layers": 1}},
        "prune": {**TRAINING, "epochs": 2, "heads": 0.5, "ffn": 0.5, "vocabulary": {"trim": True}},
        "export": {"max_seq_length": 24}, "quantize": {"max_seq_length": 24, "static": True},
        "bench": {"max_seq_length": 24, "examples": 8, "rounds": 1, "batch_sizes": [4]},
    })  # fmt: skip
    return {outcome.stage: outcome.folder for outcome in run_recipe(recipe)}


def metrics(folder: Path) -> dict:
    return json.loads((folder / "edgepress.json").read_text())["metrics"]


def test_every_training_stage_reports_entity_f1_and_keeps_it(tagged_run):
    for stage in ("finetune", "distill", "prune"):
        test = metrics(tagged_run[stage])["test"]
        assert set(test) == {"f1", "precision", "recall", "accuracy"}
        assert test["f1"] >= 0.9, (stage, test)
    assert metrics(tagged_run["distill"])["test_f1_retained"] >= 0.9
    prune = metrics(tagged_run["prune"])
    assert prune["validation_metric"] == "entity F1" and prune["after"]["heads_per_layer"] == [1]
    assert prune["vocabulary"]["after"] < prune["vocabulary"]["before"]
    assert metrics(tagged_run["finetune"])["train"]["best_validation_f1"] >= 0.9  # the Trainer selected by entity F1


def test_torch_artifacts_open_as_token_classifiers(tagged_run):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    for stage in ("finetune", "distill", "prune"):
        model = from_pretrained(AutoModelForTokenClassification, tagged_run[stage])  # head-pruned: edgepress's loader
        tokenizer = AutoTokenizer.from_pretrained(tagged_run[stage])
        # shaped like the training sentences (two to five filler words first): the tiny model leans on position
        inputs = tokenizer([["w1", "w2", "met", "alice", "smith", "in", "rome"]], is_split_into_words=True, return_tensors="pt")
        logits = model(**inputs).logits
        assert logits.shape == (1, 9, 4)
        tags = [model.config.id2label[int(i)] for i in logits[0, 1:8].argmax(-1)]
        assert tags == ["O", "O", "O", "B-PER", "I-PER", "O", "B-LOC"], stage


def test_export_is_a_token_classifier_that_matches_torch(tagged_run):
    import onnxruntime as ort
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tagged_run["export"]
    report = metrics(folder)
    assert report["exporter"] == "torch" and report["test"]["f1"] >= 0.9
    for name in ("model.onnx", "model_optimized.onnx"):
        parity = report["files"][name]["parity"]
        assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["examples"] == 16
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sentences = [["w5", "w6", "w7", "met", "carol", "jones", "in", "londonish"], ["w1", "w2", "met", "bob", "in", "paris"]]
    inputs = tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="np")
    torch_model = from_pretrained(AutoModelForTokenClassification, tagged_run["prune"]).eval()
    expected = torch_model(**tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")).logits.detach().numpy()
    for name in ("model.onnx", "model_optimized.onnx"):
        session = ort.InferenceSession(str(folder / name))
        got = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]
        assert got.shape == expected.shape == (2, 11, 4)  # one tag distribution per piece, padded batch
        assert np.abs(got - expected).max() < 1e-4


def test_int8_variants_hold_entity_f1_and_open_with_onnxruntime(tagged_run):
    import onnxruntime as ort

    report = metrics(tagged_run["quantize"])
    assert set(report["variants"]) == {"dynamic", "static"}
    for mode, variant in report["variants"].items():
        assert variant["validation"]["f1"] >= 0.99 * report["fp32"]["validation"]["f1"], mode
        assert variant["test"]["f1"] >= 0.9 and variant["test_agreement_with_fp32"] >= 0.95
        assert variant["quantized_ops"], mode
        outputs = ort.InferenceSession(str(tagged_run["quantize"] / variant["file"])).get_outputs()
        assert outputs[0].name == "logits" and outputs[0].shape[-1] == 4


def test_bench_times_every_artifact_and_reports_entity_f1(tagged_run):
    folder = tagged_run["bench"]
    document = json.loads((folder / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    names = [a["name"] for a in document["artifacts"]]
    assert len(names) == 7 and names[0] == "01-finetune torch"
    assert all(a["test"]["f1"] >= 0.9 and a["latency"]["1"]["batch 1"]["p50_ms"] > 0 for a in document["artifacts"])
    assert "| artifact | test F1 (entity) |" in (folder / "report.md").read_text()


def test_the_torch_exporter_gives_a_sequence_axis_to_the_logits(tagged_run, tiny_conll, tmp_path):
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    recipe = validate_recipe({
        "name": "torch-export", "output_dir": str(tmp_path), "task": "token-classification", "stages": ["export"],
        "model": {"name_or_path": str(tagged_run["finetune"])}, "data": {"source": str(tiny_conll)},
        "export": {"exporter": "torch", "optimize": False, "mobile": False, "max_seq_length": 24},
    })  # fmt: skip
    (outcome,) = run_recipe(recipe)
    report = outcome.manifest["metrics"]
    assert report["exporter"] == "torch" and report["files"]["model.onnx"]["parity"]["passed"]  # lengths 5 to 12 pieces
    assert report["test"]["f1"] >= 0.9
