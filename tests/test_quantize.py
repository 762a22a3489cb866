import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_recipe
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.compress.quantization.configs import PRESETS, QuantConfig, cpu_target, first_config, resolve_target, settings_to_try
from edgepress.errors import StageError
from edgepress.recipe.deploy import QuantizeSection
from edgepress.recipe.loading import validate_recipe
from edgepress.running.pipeline import run_recipe

runner = CliRunner()


def build_wide_bert(folder: Path) -> Path:
    """Like conftest's tiny BERT but 128 wide, so that weight matrices, not node names, fill the
    file and the int8 size ratio means something."""
    import torch
    from conftest import FILLER, KEYWORDS, SPECIAL
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + FILLER + [w for words in KEYWORDS.values() for w in words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=32)  # fmt: skip
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(folder)  # from its vocab.txt
    return folder


def wide_quantize_run(tmp: Path, data: Path, **quantize):
    """finetune -> export -> quantize of the 128-wide BERT; ``quantize``: more quantize settings."""
    raw = tiny_recipe(tmp, build_wide_bert(tmp / "base"), data, learning_rate=5e-4, epochs=4).model_dump(mode="json")
    raw["stages"] = ["finetune", "export", "quantize"]
    raw["export"] = {"max_seq_length": 24, "mobile": False}
    raw["quantize"] = {"max_seq_length": 24, "calibration_samples": 64, **quantize}
    return run_recipe(validate_recipe(raw))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_csv):
    return wide_quantize_run(tmp_path_factory.mktemp("quantize"), tiny_csv)


def test_both_variants_are_int8_small_and_agree_with_fp32(quantized):
    finetuned, exported, outcome = quantized
    assert finetuned.manifest["metrics"]["test"]["accuracy"] >= 0.95
    metrics = outcome.manifest["metrics"]
    dynamic, static = metrics["variants"]["dynamic"], metrics["variants"]["static"]
    assert dynamic["source"] == "model_optimized.onnx" and static["source"] == "model.onnx"
    assert dynamic["quantized_ops"]["MatMulInteger"] >= 4 and dynamic["quantized_ops"]["QAttention"] == 2
    assert static["quantized_ops"]["QuantizeLinear"] > 10 and static["quantized_ops"]["DequantizeLinear"] > 10
    for variant in (dynamic, static):
        # int8 weights are a quarter of fp32, plus the tiny model's graph overhead
        assert 0.2 < variant["size_ratio"] < (0.35 if variant is dynamic else 0.4)
        assert variant["test_agreement_with_fp32"] >= 0.95
        assert (outcome.folder / variant["file"]).is_file()
    assert metrics["test"] == dynamic["test"] and metrics["target"] in PRESETS


def test_int8_folder_opens_with_onnxruntime_and_its_tokenizer(quantized):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    folder = quantized[-1].folder
    session = ort.InferenceSession(str(folder / "model_int8_dynamic.onnx"))
    encoded = AutoTokenizer.from_pretrained(folder)(["w1 goal w2"], return_tensors="np")
    logits = session.run(["logits"], {i.name: encoded[i.name] for i in session.get_inputs()})[0]
    assert logits.shape == (1, 3)


def test_excluded_nodes_stay_fp32(quantized, tmp_path):
    from edgepress.compress.quantization.search import Calibration, quantize

    source = quantized[1].folder / "model.onnx"
    graph = onnx.load(str(source)).graph
    initializers = {i.name for i in graph.initializer}
    kept = next(n for n in graph.node if n.op_type == "MatMul" and any(x in initializers for x in n.input))
    config = replace(first_config("static", QuantizeSection(), PRESETS["avx2"]), excluded=(kept.name,))
    from transformers import AutoTokenizer

    calibration = Calibration(AutoTokenizer.from_pretrained(source.parent), {"text": ["w1 goal w2", "w3 vote"] * 4}, 24)
    quantize(config, source, tmp_path / "q.onnx", calibration)
    out = onnx.load(str(tmp_path / "q.onnx")).graph
    node = next(n for n in out.node if n.name == kept.name)
    producers = {o: n.op_type for n in out.node for o in n.output}
    float_weights = {i.name for i in out.initializer if i.data_type == onnx.TensorProto.FLOAT}
    weight = next(x for x in kept.input if x in initializers)
    assert weight in node.input and weight in float_weights  # its weight is read as fp32, not dequantized int8
    others = [n for n in graph.node if n.op_type == "MatMul" and n.name != kept.name and any(x in initializers for x in n.input)]
    quantized_weights = [n for n in out.node if n.name in {o.name for o in others} and any(producers.get(x) == "DequantizeLinear" and x not in float_weights for x in n.input)]
    assert len(quantized_weights) == len(others) > 0


def test_calibration_runs_on_real_lengths_not_padding(quantized, tmp_path):
    """Short texts calibrate at their own lengths: each batch padded to its longest text, not to
    max_seq_length; the histogram calibrators get one shape, the longest batch's, and still run."""
    from transformers import AutoTokenizer

    from edgepress.compress.quantization.search import Calibration, quantize

    source = quantized[1].folder / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(source.parent)
    texts = {"text": ["w1 goal", "w3 vote w4 w5 w6", "chip"] * 4}
    calibration = Calibration(tokenizer, texts, 24, batch=3)
    names = ["input_ids", "attention_mask"]
    widths = [b["input_ids"].shape[1] for b in iter(calibration.reader(names).get_next, None)]
    assert widths == [7] * 4  # [CLS] w3 vote w4 w5 w6 [SEP], not 24
    padded = Calibration(tokenizer, texts, 24, padding="max_length", batch=3)
    assert [b["input_ids"].shape[1] for b in iter(padded.reader(names).get_next, None)] == [24] * 4
    uneven = Calibration(tokenizer, {"text": ["w1", "w1", "w3 vote w4 w5 w6"]}, 24, batch=2)
    shaped = list(iter(uneven.reader(names, one_shape=True).get_next, None))
    assert [b["input_ids"].shape for b in shaped] == [(1, 7)] * 3
    assert shaped[0]["attention_mask"][:, 3:].sum() == 0 and (shaped[0]["input_ids"][:, 3:] == tokenizer.pad_token_id).all()
    config = first_config("static", QuantizeSection(calibration_method="percentile"), PRESETS["avx2"])
    quantize(config, source, tmp_path / "percentile.onnx", uneven)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "percentile.onnx")).graph.node)


def test_an_unreachable_tolerance_lists_what_was_tried(quantized, tmp_path, tiny_csv):
    from transformers import AutoTokenizer

    from edgepress.compress.quantization import quantize as stage
    from edgepress.compress.quantization.search import Reference
    from edgepress.data.load import load_data
    from edgepress.recipe.sections import DataSection

    folder = quantized[1].folder
    data = load_data(DataSection(source=str(tiny_csv)))
    rows = data.validation.to_dict()
    labels = np.asarray(data.validation["label"])
    # an fp32 accuracy above 100%: no int8 model can be within a tolerance of 0 of it
    reference = Reference(data, rows, labels, np.zeros((len(labels), 3)), validation={"accuracy": 1.01}, chance=1 / 3)
    ctx = type("Ctx", (), {"recipe": validate_recipe({"quantize": {"max_seq_length": 24, "tolerance": 0.0, "max_trials": 4}})})
    with pytest.raises(StageError) as error:
        stage._search("dynamic", folder / "model_optimized.onnx", tmp_path, AutoTokenizer.from_pretrained(folder),
                      reference, None, ctx, PRESETS["avx2"])  # fmt: skip
    message = str(error.value)
    assert message.startswith("no int8 dynamic model kept validation accuracy within 0% (relative) of fp32's 101.00%")
    assert message.count("dynamic, U8S8") == 4  # max_trials configurations, each named with its accuracy
    assert "1 node(s) kept fp32" in message and "raise quantize.tolerance" in message


def test_most_accurate_tries_every_setting_and_keeps_the_best(quantized, tmp_path, tiny_csv):
    """select: first keeps the recipe's setting when it passes; most_accurate tries each setting
    that keeps every node int8 and keeps the most accurate (the faster at a tie), file and config."""
    from onnx import numpy_helper
    from transformers import AutoTokenizer

    from edgepress.compress.quantization import quantize as stage
    from edgepress.data.load import load_data
    from edgepress.export.runtime import onnx_logits, open_session
    from edgepress.recipe.sections import DataSection

    data = load_data(DataSection(source=str(tiny_csv)))
    rows = data.validation.to_dict()
    tokenizer = AutoTokenizer.from_pretrained(quantized[1].folder)
    source = stage._copied(quantized[1].folder / "model_optimized.onnx", tmp_path)
    reference = stage._reference(data, rows, onnx_logits(open_session(source), tokenizer, rows, 24, 1))

    def search(select: str) -> tuple:
        ctx = type("Ctx", (), {"recipe": validate_recipe({"quantize": {"max_seq_length": 24, "tolerance": 0.5, "select": select}})})
        (tmp_path / select).mkdir()
        return stage._search("dynamic", source, tmp_path / select, tokenizer, reference, None, ctx, PRESETS["avx2"])

    config, trials, kept = search("first")
    assert len(trials) == 1 and kept is trials[0] and kept["kept"] and config == first_config("dynamic", QuantizeSection(), PRESETS["avx2"])
    config, trials, kept = search("most_accurate")
    expected = settings_to_try(first_config("dynamic", QuantizeSection(), PRESETS["avx2"]))
    assert [t["described"] for t in trials] == [c.describe() for c in expected] and len(trials) == 3
    assert [t["kept"] for t in trials].count(True) == 1 and kept["kept"] and config.to_json() == kept["config"]
    assert kept is max(trials, key=lambda t: (t["val_score"], -t["latency_ms"]))
    # the file left behind is the kept trial's: per-channel scales are vectors, 7-bit weights stay within [-64, 63]
    graph = onnx.load(str(tmp_path / "most_accurate" / "dynamic-kept.onnx")).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    matrices = [name for name, a in arrays.items() if name.endswith("_quantized") and a.dtype == np.int8 and a.ndim == 2]  # not the u8 embeddings
    weights, scales = [arrays[n] for n in matrices], [arrays[n.removesuffix("_quantized") + "_scale"] for n in matrices]
    assert weights and scales and all((s.size > 1) == config.per_channel for s in scales)
    assert (max(int(np.abs(w).max()) for w in weights) <= 64) == config.reduce_range


def test_presets_fill_what_the_recipe_leaves_open():
    avx2 = first_config("static", QuantizeSection(), PRESETS["avx2"])
    assert (avx2.activation_type, avx2.weight_type, avx2.reduce_range) == ("uint8", "int8", True)
    arm = first_config("static", QuantizeSection(reduce_range=True), PRESETS["arm64"])
    assert (arm.activation_type, arm.reduce_range) == ("int8", True)  # the recipe wins over the preset
    assert first_config("dynamic", QuantizeSection(), PRESETS["arm64"]).activation_type == "uint8"
    settings = settings_to_try(avx2)
    assert settings[0] == avx2 and settings[1].per_channel != avx2.per_channel
    assert [s.calibration_method for s in settings[2:4]] == ["percentile", "entropy"]
    assert all(isinstance(s, QuantConfig) and not s.excluded for s in settings)


def test_a_preset_for_another_cpu_is_warned_about(caplog):
    here, flags = cpu_target()
    other = "arm64" if here != "arm64" else "avx2"
    assert resolve_target("auto") == (here, PRESETS[here])
    with caplog.at_level("WARNING"):
        resolve_target(other)
    assert f"quantize.target is {other} but this CPU is {here}" in caplog.text


def test_quantize_command_refuses_a_torch_folder(tmp_path, tiny_classifier, tiny_csv):
    result = runner.invoke(app, ["quantize", "--model", str(tiny_classifier), "--data", str(tiny_csv), "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "has no model_optimized.onnx or model.onnx; quantize reads the folder of the export stage" in result.stderr
    assert not (tmp_path / "quantize" / "01-quantize").exists()


def test_quantize_command_on_an_export_folder(tmp_path, quantized, tiny_csv):
    args = ["quantize", "--model", str(quantized[1].folder), "--data", str(tiny_csv), "--output-dir", str(tmp_path),
            "--no-static", "--max-seq-length", "24"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "quantize" / "01-quantize" / "edgepress.json").read_text())
    assert list(manifest["metrics"]["variants"]) == ["dynamic"]
    assert "quantize: test accuracy" in result.stdout


def test_a_histogram_method_that_cannot_calibrate_is_a_failed_trial_not_a_crash(quantized, tmp_path):
    """ONNX Runtime's histogram collector (np.histogram) refuses a tensor whose values span too narrow a
    range for their size; here 1e8 + token ids in float32. The search records it and goes on."""
    from onnx import TensorProto, helper
    from transformers import AutoTokenizer

    from edgepress.compress.quantization.search import Calibration, CalibrationError, quantize

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["ids", "offset"], ["shifted"]),
        helper.make_node("Unsqueeze", ["shifted", "axis"], ["column"]),
        helper.make_node("MatMul", ["column", "weight"], ["per_token"]),
        helper.make_node("ReduceMean", ["per_token", "axis_1"], ["logits"], keepdims=0),
    ]
    constants = [
        helper.make_tensor("offset", TensorProto.FLOAT, [], [1e8]), helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
        helper.make_tensor("weight", TensorProto.FLOAT, [1, 3], [0.1, 0.2, 0.3]), helper.make_tensor("axis_1", TensorProto.INT64, [1], [1]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "narrow", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], constants,
    )  # fmt: skip
    source = tmp_path / "narrow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(source))
    tokenizer = AutoTokenizer.from_pretrained(quantized[1].folder)
    calibration = Calibration(tokenizer, {"text": ["w1 goal w9 w30", "w3 vote w4 w5 w6", "chip w39"] * 4}, 24, batch=3)
    minmax = first_config("static", QuantizeSection(), PRESETS["avx2"])
    quantize(minmax, source, tmp_path / "minmax.onnx", calibration)  # min/max needs no bins: fine
    with pytest.raises(CalibrationError, match="percentile calibration failed on this model: Too many bins"):
        quantize(replace(minmax, calibration_method="percentile"), source, tmp_path / "percentile.onnx", calibration)


def test_int8_accuracy_is_scored_at_the_deployment_batch_size(quantized):
    """Issue 30: dynamic int8 scales each batch's activations together, so a batch-1 deployment is
    scored one text at a time (the default), and the score is what that gives."""
    from transformers import AutoTokenizer

    from edgepress.data.load import load_data
    from edgepress.export.runtime import onnx_logits, open_session
    from edgepress.metrics import predictions_of

    _, exported, outcome = quantized
    metrics = outcome.manifest["metrics"]
    assert metrics["scored_at_batch_size"] == 1 and QuantizeSection().scoring_batch_size == 1
    assert QuantizeSection(deployment_batch_size=0, eval_batch_size=16).scoring_batch_size == 16
    from edgepress.recipe.loading import load_recipe

    recipe = load_recipe(outcome.folder.parent / "recipe.yaml")  # the run's resolved recipe
    data = load_data(recipe.data)
    rows = data.test.to_dict()
    tokenizer = AutoTokenizer.from_pretrained(outcome.folder)
    session = open_session(outcome.folder / "model_int8_dynamic.onnx")
    one_by_one = predictions_of(onnx_logits(session, tokenizer, rows, recipe.quantize.max_seq_length, 1))
    assert metrics["variants"]["dynamic"]["test"]["accuracy"] == pytest.approx(float(np.mean(np.asarray(one_by_one) == np.asarray(rows["label"]))))
