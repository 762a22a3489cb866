"""A model with its tokenizer inside (onnxruntime-extensions): raw text in, label and scores out."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_schema_valid
from test_export import export_recipe
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.errors import StageError
from edgepress.export import bundle
from edgepress.export.runtime import open_session
from edgepress.running.pipeline import run_recipe

runner = CliRunner()
TEXTS = ["goal w1 w2 team", "VOTE w3 Party", "chip code w7 unseen", "Goál ☃ 日本 w5", "w1 " * 40]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_classifier, tiny_csv):
    tmp = tmp_path_factory.mktemp("bundle")
    recipe = export_recipe(tmp, tiny_classifier, tiny_csv, with_tokenizer=True, mobile=False)
    *_, outcome = run_recipe(recipe.model_copy(update={"stages": ["export", "quantize"], "quantize": recipe.quantize.model_copy(update={"with_tokenizer": True, "static": False, "max_seq_length": 24})}))
    return outcome


def two_part(folder: Path, model: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer, session = AutoTokenizer.from_pretrained(folder), open_session(folder / model)
    names = {i.name for i in session.get_inputs()}
    rows = [tokenizer([t], truncation=True, max_length=24, return_tensors="np") for t in texts]
    return np.concatenate([session.run(["logits"], {k: v.astype(np.int64) for k, v in r.items() if k in names})[0] for r in rows])


def test_text_in_label_and_scores_out_matching_the_two_part_pipeline(exported, tiny_classifier):
    folder = exported.folder.parent / "01-export"
    path = folder / "model_optimized_with_tokenizer.onnx"
    assert exported.manifest["metrics"]["variants"]["dynamic"]["with_tokenizer"]["parity"]["same_predictions"] == 64
    manifest = json.loads((folder / "edgepress.json").read_text())["metrics"]["files"][path.name]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    session = bundle.open_bundle(path)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("text", "tensor(string)")]
    labels = json.loads((tiny_classifier / "config.json").read_text())["id2label"]
    expected = two_part(folder, "model_optimized.onnx", TEXTS)  # accents, unknown characters, and a text past max_length
    for text, reference in zip(TEXTS, expected):
        label, scores, label_id, logits = session.run(["label", "scores", "label_id", "logits"], {"text": np.array([text])})
        assert np.abs(logits[0] - reference).max() < 1e-4
        assert label[0] == labels[str(int(reference.argmax()))] and int(label_id[0]) == int(reference.argmax())
        assert scores.shape == (1, 3) and abs(float(scores.sum()) - 1) < 1e-5
    int8 = exported.folder / "model_int8_dynamic_with_tokenizer.onnx"
    reference = two_part(exported.folder, "model_int8_dynamic.onnx", TEXTS)
    got = np.concatenate([bundle.open_bundle(int8).run(["logits"], {"text": np.array([t])})[0] for t in TEXTS])
    assert np.abs(got - reference).max() < 1e-4


def test_the_bundle_needs_the_extensions_library_and_is_valid_onnx(exported):
    path = exported.folder / "model_int8_dynamic_with_tokenizer.onnx"
    onnx.checker.check_model(str(path))
    domains = {o.domain for o in onnx.load(str(path)).opset_import}
    assert {"ai.onnx.contrib", "ai.onnx.ml"} <= domains
    with pytest.raises(Exception, match="BertTokenizer"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_bundle_that_disagrees_fails_the_check(exported, tmp_path):
    """A tokenizer that lower-cases where the model's does not splits 'VOTE' differently: caught."""
    from transformers import AutoTokenizer

    folder = exported.folder.parent / "01-export"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    wrong = tmp_path / "wrong.onnx"
    built = bundle.build(folder / "model_optimized.onnx", tokenizer, ["a", "b", "c"], 24)
    tokenizer_node = next(n for n in built.graph.node if n.op_type == "BertTokenizer")
    next(a for a in tokenizer_node.attribute if a.name == "do_lower_case").i = 0
    onnx.save(built, str(wrong))
    with pytest.raises(StageError, match="disagrees with the tokenizer \\+ model pipeline"):
        bundle.check(wrong, folder / "model_optimized.onnx", tokenizer, ["VOTE w3 Party", "CHIP code"], 24, 1e-4)


def test_bench_times_the_bundle_at_batch_one(exported, tiny_csv, tmp_path):
    result = runner.invoke(app, [
        "bench", "--model", f"bundle={exported.folder / 'model_int8_dynamic_with_tokenizer.onnx'}",
        "--model", f"plain={exported.folder / 'model_int8_dynamic.onnx'}", "--data", str(tiny_csv),
        "--threads", "1", "--examples", "8", "--rounds", "2", "--batch-size", "4", "--max-seq-length", "24", "--output", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    rows = {r["name"]: r for r in document["artifacts"]}
    assert list(rows["bundle"]["latency"]["1"]) == ["batch 1"]
    assert set(rows["plain"]["latency"]["1"]) == {"batch 1", "batch 4 x 24"}
    assert rows["bundle"]["test"]["accuracy"] == rows["plain"]["test"]["accuracy"]
