"""Issue 20: int8 PyTorch models with Intel Neural Compressor 3.x (quantize.backend), beside ONNX
Runtime's, and timed by bench with PyTorch. A 128-wide tiny BERT, real INC, real torch.export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_quantize import wide_quantize_run

from edgepress.errors import StageError


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny_csv):
    return wide_quantize_run(tmp_path_factory.mktemp("inc"), tiny_csv, backend="both")


def texts(n: int = 16) -> dict[str, list]:
    from conftest import synthetic_rows

    return {"text": [r["text"] for r in synthetic_rows(n, seed=7)]}


def test_both_backends_write_their_int8_models_side_by_side(both):
    metrics = both[-1].manifest["metrics"]
    assert set(metrics["variants"]) == {"dynamic", "static", "inc-dynamic", "inc-static"}
    for mode in ("dynamic", "static"):
        inc = metrics["variants"][f"inc-{mode}"]
        assert inc["backend"] == "neural-compressor" and (both[-1].folder / inc["file"]).is_file()
        assert inc["validation"]["accuracy"] >= 0.99 * inc["fp32_validation"]["accuracy"]
        assert inc["test_agreement_with_fp32"] >= 0.95 and inc["reload_max_abs_diff"] <= 1e-4
        assert inc["trials"][0]["config"] == "fp32 (baseline)" and len(inc["trials"]) >= 2  # autotune's record
    assert next(iter(json.loads((both[-1].folder / "inc_int8_static" / "qconfig.json").read_text()))) == "static_quant"


def test_every_linear_layer_is_quantized_and_logits_stay_close(both):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgepress.compress.quantization import inc
    folder = both[-1].folder / "inc_int8_static"
    model = inc.load(folder)
    quantize_ops = [n for n in model.graph.nodes if "quantize_per_tensor" in str(n.target)]
    fp32 = AutoModelForSequenceClassification.from_pretrained(both[0].folder).eval()
    linear = sum(isinstance(m, torch.nn.Linear) for m in fp32.modules())
    assert len(quantize_ops) >= linear  # every Linear reads int8 activations
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = inc.Inputs(model, tokenizer, 24)
    got = inc.logits_of(model, inputs, texts(), 8)
    expected = inc.logits_of(fp32, inputs, texts(), 8)
    spread = float(np.abs(expected).max())
    assert float(np.abs(got - expected).max()) < 0.05 * spread  # int8 noise, well under the logits' scale
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_the_saved_model_stores_fp32_weights(both):
    """INC's PT2E path converts with fold_quantize=False (pt2e_quant/core.py), and its entry points
    never pass True: the saved program keeps fp32 weights and quantizes them on each call, so the
    file is not smaller than the fp32 model (the README says so). This fails when INC changes it."""
    for mode in ("dynamic", "static"):
        assert both[-1].manifest["metrics"]["variants"][f"inc-{mode}"]["size_ratio"] > 1.0


def test_the_artifact_reloads_in_a_fresh_process_without_edgepress(both, tmp_path):
    from transformers import AutoTokenizer

    from edgepress.compress.quantization import inc
    folder = both[-1].folder / "inc_int8_dynamic"
    model = inc.load(folder)
    here = inc.logits_of(model, inc.Inputs(model, AutoTokenizer.from_pretrained(folder), 24), texts(4), 4)
    script = (
        "import sys, numpy\n"
        "from neural_compressor.torch.quantization import load\n"
        "from transformers import AutoTokenizer\n"
        f"model = load({str(folder)!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})\n"
        f"x = tokenizer({texts(4)['text']!r}, padding=True, return_tensors='pt')\n"
        "numpy.save(sys.argv[1], model(x['input_ids'], x['attention_mask'], x['token_type_ids'])[0].detach().numpy())\n"
    )
    out = tmp_path / "logits.npy"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.abs(np.load(out) - here).max() < 1e-5


def test_a_tolerance_no_variant_meets_fails_the_stage_with_what_was_tried():
    from edgepress.compress.quantization.inc import _check_tolerance

    trials = [{"config": "fp32 (baseline)", "validation": {"accuracy": 0.9}},
              {"config": {"w_granularity": "per_channel"}, "validation": {"accuracy": 0.8}},
              {"config": {"w_granularity": "per_tensor"}, "validation": {"accuracy": 0.85}}]  # fmt: skip
    with pytest.raises(StageError) as error:
        _check_tolerance("static", {"accuracy": 0.85}, {"accuracy": 0.9}, 0.01, trials)
    assert str(error.value) == (
        "no neural-compressor int8 static model kept validation accuracy within 1% (relative) of fp32's 90.00%; tried "
        "per_channel weights: 80.00%; per_tensor weights: 85.00%; raise quantize.tolerance, or use quantize.backend: onnxruntime"
    )
    _check_tolerance("static", {"accuracy": 0.895}, {"accuracy": 0.9}, 0.01, trials)  # within: no error


@pytest.mark.slow
def test_bench_times_the_inc_model_compiled_beside_the_onnx_ones(both, tmp_path, tiny_csv):
    from edgepress.bench.artifacts import run_artifacts
    from edgepress.bench.stage import benchmark
    from edgepress.data.load import load_data
    from edgepress.recipe.deploy import BenchSection
    from edgepress.recipe.sections import DataSection

    run = both[-1].folder.parent
    artifacts = [a for a in run_artifacts(run, include_torch=False) if "dynamic" not in a.name]
    assert [a.kind for a in artifacts] == ["onnx", "onnx", "onnx", "inc"]
    data = load_data(DataSection(source=str(tiny_csv)))
    cfg = BenchSection(threads=[1], examples=8, rounds=1, batch_sizes=[4], max_seq_length=24)
    document = benchmark(artifacts, data, cfg, tmp_path)
    inc = next(a for a in document["artifacts"] if a["kind"] == "inc")
    assert inc["latency"]["1"]["batch 1"]["p50_ms"] > 0 and inc["test"]["accuracy"] >= 0.95
    assert "inc_int8_static torch" in (tmp_path / "report.md").read_text()
