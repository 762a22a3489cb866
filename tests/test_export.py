import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import build_tiny_bert
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.data.load import load_data
from edgepress.errors import ModelError
from edgepress.export.onnx import export_model
from edgepress.export.parity import ParityError, check_parity, parity_cases, torch_references
from edgepress.export.runtime import feeds, open_session
from edgepress.models import load_trained
from edgepress.recipe.deploy import ExportSection
from edgepress.recipe.loading import validate_recipe
from edgepress.recipe.sections import DataSection, ModelSection
from edgepress.running.pipeline import run_recipe

runner = CliRunner()


def export_recipe(tmp_path: Path, model: Path, data: Path, **export):
    return validate_recipe({
        "name": "export", "output_dir": str(tmp_path / "runs"), "stages": ["export"],
        "model": {"name_or_path": str(model)}, "data": {"source": str(data)},
        "export": {"max_seq_length": 24, **export},
    })  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_classifier, tiny_csv):
    tmp = tmp_path_factory.mktemp("export")
    (outcome,) = run_recipe(export_recipe(tmp, tiny_classifier, tiny_csv, fp16=True))
    return outcome


def test_every_variant_is_written_and_passes_parity(exported, tiny_classifier):
    files = exported.manifest["metrics"]["files"]
    expected = {"model.onnx", "model_optimized.onnx", "model_optimized.ort", "model_fp16.onnx"}
    assert expected | {"model_optimized.required_operators.config"} == set(files)
    for name in expected:
        assert (exported.folder / name).is_file()
        parity = files[name]["parity"]
        assert parity["passed"] and parity["argmax_disagreements"] == 0
        assert parity["examples"] == 16 and len(parity["cases"]) == 9  # 8 texts alone, then in one padded batch
    assert files["model.onnx"]["parity"]["max_abs_diff"] < 1e-4
    assert files["model_fp16.onnx"]["parity"]["tolerance"] == pytest.approx(2e-2)
    assert float_bytes(exported.folder / "model_fp16.onnx") < 0.55 * float_bytes(exported.folder / "model_optimized.onnx")
    # ONNX and torch classify the test split the same: parity made visible in the metric users read
    torch_manifest = json.loads((tiny_classifier / "edgepress.json").read_text())
    assert exported.manifest["metrics"]["test"] == pytest.approx(torch_manifest["metrics"]["test"])


def float_bytes(path: Path) -> int:
    """Bytes of a graph's floating-point weights (the file also holds the graph, which fp16 leaves as it is)."""
    tensors = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    return sum(t.nbytes for t in tensors if t.dtype.kind == "f")


def test_optimized_graph_has_fused_ops_and_fewer_nodes(exported):
    optimized = exported.manifest["metrics"]["files"]["model_optimized.onnx"]
    assert optimized["fused_ops"]["Attention"] == 2 == optimized["attention_fused_layers"] == optimized["layers"]
    assert optimized["fused_ops"]["SkipLayerNormalization"] == 4
    graph = onnx.load(str(exported.folder / "model_optimized.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops and "Softmax" not in ops
    assert len(graph.node) < sum(exported.manifest["metrics"]["files"]["model.onnx"]["ops"].values())


def test_ort_mobile_file_loads_and_lists_its_operators(exported):
    config = (exported.folder / "model_optimized.required_operators.config").read_text()
    assert "com.microsoft;1;" in config and "Attention" in config
    session = open_session(exported.folder / "model_optimized.ort")
    plain = open_session(exported.folder / "model.onnx")
    inputs = {"input_ids": np.array([[2, 10, 48, 3]]), "attention_mask": np.ones((1, 4)), "token_type_ids": np.zeros((1, 4))}
    np.testing.assert_allclose(session.run(None, feeds(session, inputs))[0], plain.run(None, feeds(plain, inputs))[0], atol=1e-5)


def tampered_parity(tmp_path, tiny_classifier, tiny_csv, change):
    model, tokenizer = load_trained(ModelSection(name_or_path=str(tiny_classifier)), attn_implementation="eager")
    export_model(model, tokenizer, tmp_path, ExportSection())
    graph = onnx.load(str(tmp_path / "model.onnx"))
    bias = next(i for i in graph.graph.initializer if i.name == "classifier.bias")
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += change
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(graph, str(tmp_path / "model.onnx"))
    rows = load_data(DataSection(source=str(tiny_csv))).validation.to_dict()
    cases = parity_cases(tokenizer, rows, 24, 4)
    return check_parity(open_session(tmp_path / "model.onnx"), cases, torch_references(model, cases), 1e-4, "model.onnx")


def test_parity_fails_when_one_initializer_is_changed(tmp_path, tiny_classifier, tiny_csv):
    assert tampered_parity(tmp_path / "a", tiny_classifier, tiny_csv, change=0.0)["passed"]
    with pytest.raises(ParityError, match=r"parity check failed for model.onnx: max \|logit difference\| 1.00e-02"):
        tampered_parity(tmp_path / "b", tiny_classifier, tiny_csv, change=0.01)


def test_torch_exporter_names_inputs_in_forward_order(tmp_path, tiny_classifier, tiny_csv):
    (outcome,) = run_recipe(export_recipe(tmp_path, tiny_classifier, tiny_csv, exporter="torch", mobile=False))
    metrics = outcome.manifest["metrics"]
    assert metrics["exporter"] == "torch" and metrics["files"]["model_optimized.onnx"]["parity"]["passed"]
    session = open_session(outcome.folder / "model.onnx")
    # the tokenizer yields token_type_ids before attention_mask; BERT's forward takes them the other way round
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]


def test_corrupt_and_non_onnx_files_are_clear_errors(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x00not an onnx model")
    with pytest.raises(ModelError, match=r"model.onnx is not a valid ONNX model .*re-export it"):
        open_session(tmp_path / "model.onnx")
    (tmp_path / "notes.onnx").write_text("hello")
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        open_session(tmp_path / "notes.onnx")
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "model.onnx"), "--output-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "is an ONNX model; this stage reads a torch model folder" in result.stderr
    assert not (tmp_path / "runs" / "export" / "01-export").exists()


def test_a_model_without_classification_head_is_refused(tmp_path, tiny_bert, tiny_csv):
    result = runner.invoke(app, ["export", "--model", str(tiny_bert), "--data", str(tiny_csv), "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "has no text-classification head (architectures: BertModel)" in result.stderr


def test_export_command_on_a_folder_made_outside_edgepress(tmp_path, tiny_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = build_tiny_bert(tmp_path / "base")
    outside = tmp_path / "outside"  # what a user saves after adding a fresh head themselves
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=4).save_pretrained(outside)
    AutoTokenizer.from_pretrained(base).save_pretrained(outside)
    args = ["export", "--model", str(outside), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"), "--max-seq-length", "24"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # rich wraps the summary at the terminal's width, wherever the temporary path puts the break
    assert "model labels differ from the data's labels; accuracy not measured" in " ".join(result.stdout.split())
    folder = tmp_path / "runs" / "export" / "01-export"
    manifest = json.loads((folder / "edgepress.json").read_text())
    assert manifest["metrics"]["files"]["model_optimized.onnx"]["parity"]["passed"]
    assert open_session(folder / "model_optimized.onnx").get_outputs()[0].shape[-1] == 4


# --------------------------------------------------------------------------- issue 28: the dynamo exporter


@pytest.mark.parametrize("task", ["text-classification", "token-classification"])
def test_the_dynamo_export_of_each_task_takes_any_batch_and_length(tmp_path, task, tiny_classifier, tiny_ner_bert):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from edgepress.export.fusion import optimize_graph

    if task == "text-classification":
        model, tokenizer = load_trained(ModelSection(name_or_path=str(tiny_classifier)), attn_implementation="eager")
    else:  # a fresh tagging head: the export does not care what it learned
        model = AutoModelForTokenClassification.from_pretrained(tiny_ner_bert, num_labels=5, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(tiny_ner_bert)
    assert export_model(model, tokenizer, tmp_path, ExportSection(exporter="torch"), task) == "torch"
    stats = optimize_graph(tmp_path / "model.onnx", tmp_path / "fused.onnx", "bert", 2, "torch")
    assert stats["fusion"] == "onnxscript.rewriter.ort_fusions" and stats["attention_fused_layers"] == 2
    assert stats["attention_mask_index"] == 2  # the padding mask as mask_index: the form the int8 quantizer handles
    fused = onnx.load(str(tmp_path / "fused.onnx")).graph
    assert {n.op_type for n in fused.node} >= {"Attention", "SkipLayerNormalization"}
    # one folded q/k/v weight per layer: no fp32 parts left beside the int8 copy after quantization
    initializers = {i.name for i in fused.initializer}
    assert all(n.input[1] in initializers for n in fused.node if n.op_type == "Attention")
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(tmp_path / "fused.onnx"), str(tmp_path / "int8.onnx"))
    int8_ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node)
    assert int8_ops["QAttention"] == 2 and int8_ops["Attention"] == 0 and int8_ops["MatMulInteger"] >= 4
    generator = torch.Generator().manual_seed(0)
    for batch, length in ((1, 5), (3, 40), (3, 5), (1, 40)):
        inputs = {"input_ids": torch.randint(5, 40, (batch, length), generator=generator), "attention_mask": torch.ones(batch, length, dtype=torch.long),
                  "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}  # fmt: skip
        inputs["attention_mask"][0, length // 2 :] = 0  # one padded row
        with torch.no_grad():
            expected = model(**inputs).logits.numpy()
        for name in ("model.onnx", "fused.onnx"):
            session = open_session(tmp_path / name)
            got = session.run(["logits"], feeds(session, {k: v.numpy() for k, v in inputs.items()}))[0]
            assert got.shape == expected.shape == ((batch, 3) if task == "text-classification" else (batch, length, 5))
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_optimum_exporter_without_optimum_onnx_is_one_line(tmp_path, tiny_classifier, tiny_csv):
    import importlib.util

    if importlib.util.find_spec("optimum") is not None:
        pytest.skip("optimum-onnx is installed here: this checks the environment without it, edgepress's default")
    args = ["export", "--model", str(tiny_classifier), "--data", str(tiny_csv), "--output-dir", str(tmp_path / "runs"), "--set", "export.exporter=optimum"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "export.exporter: optimum needs optimum-onnx, which is not installed here" in result.stderr


@pytest.mark.parametrize("bias", ["mask", "learned", "mask-unequal-sizes"])
def test_only_a_padding_mask_bias_becomes_a_mask_index(bias):
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from edgepress.export.fusion import attention_mask_index

    hidden, sizes = 8, [8, 8, 8] if bias != "mask-unequal-sizes" else [8, 8, 4]
    weights = numpy_helper.from_array(np.zeros((hidden, sum(sizes)), np.float32), "w")
    learned = numpy_helper.from_array(np.ones((1, 2, 3, 3), np.float32), "learned")
    # a padding mask turned into an additive bias, the way the dynamo export of BERT does it
    mask_nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_bool"], to=TensorProto.BOOL),
        helper.make_node("Where", ["mask_bool", "zero", "lowest"], ["bias"]),
    ]
    attention = helper.make_node(
        "Attention", ["x", "w", "", "", "", "bias" if bias != "learned" else "learned"], ["y"],
        domain="com.microsoft", num_heads=2, qkv_hidden_sizes=sizes,
    )  # fmt: skip
    graph = helper.make_graph(
        [*mask_nodes, attention], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", hidden]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", hidden])],
        [weights, learned, numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(-3e38), "lowest")],
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]))
    rewritten = attention_mask_index(model)
    node = next(n for n in model.graph if n.op_type == "Attention")
    if bias == "mask":
        assert rewritten == 1 and len(node.inputs) == 4 and "qkv_hidden_sizes" not in node.attributes
        assert node.inputs[3].producer().op_type == "Cast" and node.inputs[3].producer().inputs[0].name == "attention_mask"
        assert not any(n.op_type == "Where" for n in model.graph)  # the float bias is gone
    else:
        assert rewritten == 0 and len(node.inputs) == 6 and "qkv_hidden_sizes" in node.attributes
