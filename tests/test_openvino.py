"""Issue 31: OpenVINO as a deployment backend (quantize.backend: openvino): the export converted to IR,
NNCF int8, checked against the fp32 IR, reopened by OpenVINO alone, and timed by bench beside ONNX
Runtime. A 128-wide tiny BERT, real OpenVINO, real NNCF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_quantize import wide_quantize_run

from edgepress.errors import ModelError
from edgepress.export import ir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_openvino(tmp_path_factory, tiny_csv):
    return wide_quantize_run(tmp_path_factory.mktemp("openvino"), tiny_csv, backend="onnxruntime,openvino", static=False)


def test_ir_and_int8_ir_are_written_with_config_and_tokenizer(with_openvino):
    outcome = with_openvino[-1]
    folder = outcome.folder / "openvino"
    for name in (ir.FP32_NAME, ir.INT8_NAME):
        assert (folder / name).is_file() and (folder / name).with_suffix(".bin").is_file()
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    metrics = outcome.manifest["metrics"]
    assert metrics["backend"] == ["onnxruntime", "openvino"]
    assert {"dynamic", "openvino-int8"} <= set(metrics["variants"])


def test_every_linear_layer_reads_int8_and_the_file_is_small(with_openvino):
    outcome = with_openvino[-1]
    variant = outcome.manifest["metrics"]["variants"]["openvino-int8"]
    saved = ir.op_counts(ir.read(outcome.folder / variant["file"]))
    # 2 layers x (q, k, v, output, 2 FFN) linear layers, plus attention's two matrix products per layer
    assert saved.get("FakeQuantize", 0) == variant["quantized_ops"]["FakeQuantize"] >= 12
    assert "FakeQuantize" not in ir.op_counts(ir.read(outcome.folder / "openvino" / ir.FP32_NAME))
    assert 0.2 < variant["size_ratio"] < 0.45  # int8 weights: about a quarter of the fp32 IR
    assert variant["precision"] == "f32"  # scored with floating-point parts in f32, on every CPU


def test_int8_agrees_with_the_fp32_ir_within_the_tolerance(with_openvino):
    outcome = with_openvino[-1]
    variant = outcome.manifest["metrics"]["variants"]["openvino-int8"]
    reference = variant["fp32_validation"]["accuracy"]
    assert variant["validation"]["accuracy"] >= reference * (1 - outcome.manifest["config"]["quantize"]["tolerance"])
    assert variant["test_agreement_with_fp32"] >= 0.95 and variant["validation_agreement_with_fp32"] >= 0.95
    # plain PTQ first; NNCF's accuracy control only when that missed the tolerance, and the last one kept
    methods = [t["method"] for t in variant["trials"]]
    assert methods == ["nncf.quantize", "nncf.quantize_with_accuracy_control"][: len(methods)]
    assert variant["trials"][-1]["within_tolerance"] and all(not t["within_tolerance"] for t in variant["trials"][:-1])
    assert variant["described"].startswith(methods[-1])


def test_the_fp32_ir_matches_onnx_runtime(with_openvino):
    from transformers import AutoTokenizer

    from edgepress.export.runtime import onnx_logits, open_session

    exported, outcome = with_openvino[1], with_openvino[-1]
    tokenizer = AutoTokenizer.from_pretrained(outcome.folder / "openvino")
    rows = {"text": ["sports match goal", "the vote in parliament today was close and long", "tech"]}
    expected = onnx_logits(open_session(exported.folder / "model.onnx"), tokenizer, rows, 24)
    got = ir.ir_logits(ir.compile_ir(outcome.folder / "openvino" / ir.FP32_NAME), tokenizer, rows, 24)
    assert got.shape == expected.shape == (3, 3)
    assert float(np.abs(got - expected).max()) < 1e-4


RELOAD = """
import json, sys
import numpy as np
import openvino as ov
path, feeds = sys.argv[1], json.loads(sys.argv[2])
compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
logits = compiled({k: np.array(v, dtype=np.int64) for k, v in feeds.items()})[compiled.output(0)]
heavy = sorted(m for m in ("torch", "transformers", "edgepress", "onnxruntime") if m in sys.modules)
print(json.dumps({"logits": logits.tolist(), "imported": heavy}))
"""


def test_the_int8_ir_reloads_in_a_fresh_process_with_openvino_alone(with_openvino):
    from transformers import AutoTokenizer

    path = with_openvino[-1].folder / "openvino" / ir.INT8_NAME
    tokenizer = AutoTokenizer.from_pretrained(path.parent)
    encoded = {k: v.tolist() for k, v in tokenizer(["sports match goal", "a b"], padding=True, return_tensors="np").items()}
    done = subprocess.run([sys.executable, "-c", RELOAD, str(path), json.dumps(encoded)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["imported"] == []
    here = ir.run(ir.compile_ir(path), {k: np.array(v) for k, v in encoded.items()})
    assert np.abs(np.array(reloaded["logits"]) - here).max() < 1e-5


def test_bench_times_openvino_beside_onnx_runtime_and_names_runtime_and_precision(with_openvino, tiny_csv, tmp_path):
    from conftest import assert_schema_valid

    run = with_openvino[-1].folder.parent
    done = subprocess.run(
        [sys.executable, "-m", "edgepress", "bench", "--run", str(run), "--output", str(tmp_path / "bench"), "--data", str(tiny_csv),
         "--examples", "8", "--rounds", "2", "--batch-size", "4", "--threads", "1", "--max-seq-length", "24", "--no-torch"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    rows = {row["name"]: row for row in document["artifacts"]}
    int8 = rows["03-quantize/openvino/openvino_model_int8.xml"]
    assert int8["runtime"] == "openvino" and int8["kind"] == "openvino" and int8["precision"] == "int8"
    assert rows["03-quantize/openvino/openvino_model.xml"]["precision"] == "fp32"
    assert int8["test"]["accuracy"] > 0.5 and set(int8["latency"]["1"]) == {"batch 1", "batch 4 x 24"}
    assert rows["03-quantize/openvino/openvino_model.xml"]["bytes"] > 2 * int8["bytes"]  # embeddings stay fp32
    assert rows["03-quantize/model_int8_dynamic.onnx"]["runtime"] == "onnxruntime"
    assert rows["03-quantize/model_int8_dynamic.onnx"]["precision"] == "int8"
    chosen = document["fastest"]
    assert rows[chosen["reference"]]["precision"] == "fp32" and chosen["reference"] in rows
    for case, name in chosen["by_threads"]["1"].items():  # no row within the tolerance is quicker
        within = [r for r in rows.values() if r["test"] and r["test"]["accuracy"] >= rows[chosen["reference"]]["test"]["accuracy"] * 0.99]
        assert rows[name]["latency"]["1"][case]["p50_ms"] == min(r["latency"]["1"][case]["p50_ms"] for r in within)
    assert "Fastest on this target" in (tmp_path / "bench" / "report.md").read_text()
    bf16_rows = [r for r in rows.values() if r["precision"] == "bf16"]
    assert bool(bf16_rows) == ("bf16" in ir.available_precisions())  # bf16 only where the CPU runs it


def test_a_fused_graph_is_refused_in_one_line(with_openvino):
    fused = with_openvino[-1].folder / "model_int8_dynamic.onnx"  # QAttention: ONNX Runtime only
    with pytest.raises(ModelError) as error:
        ir.convert(fused)
    assert "convert the plain export (model.onnx)" in str(error.value) and "\n" not in str(error.value)


def test_the_backend_list_reads_one_name_both_and_a_comma_list():
    from pydantic import ValidationError

    from edgepress.recipe.deploy import QuantizeSection

    assert QuantizeSection(backend="both").backend == ["onnxruntime", "neural-compressor"]
    assert QuantizeSection(backend="onnxruntime, openvino").backend == ["onnxruntime", "openvino"]
    assert QuantizeSection(backend=["openvino"], dynamic=False, static=False).backend == ["openvino"]
    with pytest.raises(ValidationError, match="at most once"):
        QuantizeSection(backend=["openvino", "openvino"])
    with pytest.raises(ValidationError, match="turn on at least one"):
        QuantizeSection(backend="onnxruntime", dynamic=False, static=False)


def test_a_missing_ir_names_the_stage_that_writes_it(tmp_path: Path):
    with pytest.raises(ModelError, match="quantize.backend: \\[openvino\\]"):
        ir.read(tmp_path / "openvino_model.xml")


def test_the_runtimes_benchmark_times_every_runtime_in_one_bench_run(with_openvino, tiny_csv, tmp_path):
    root = Path(__file__).resolve().parent.parent
    run = with_openvino[-1].folder.parent
    out = tmp_path / "runtimes.json"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "runtimes.py"), str(run), "--data", str(tiny_csv), "--output", str(tmp_path / "rt"),
         "--examples", "32", "--rounds", "1", "--max-seq-length", "24", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads(out.read_text())["bench"]["artifacts"]}
    # the run has no static int8 file (static: false): four files, two runtimes
    assert set(rows) == {"ORT fp32 (fused)", "ORT int8 dynamic", "OpenVINO fp32 IR", "OpenVINO NNCF int8"}
    assert {r["runtime"] for r in rows.values()} == {"onnxruntime", "openvino"}
    assert set(rows["OpenVINO NNCF int8"]["latency"]["1"]) == {"batch 1", "batch 32 x 24"}
    assert "Fastest on this target" in done.stdout


def test_the_peak_benchmark_counts_the_work_and_profiles_each_runtime(with_openvino, tmp_path):
    root = Path(__file__).resolve().parent.parent
    run = with_openvino[-1].folder.parent
    out = tmp_path / "peak.json"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "peak.py"), str(run), "--openvino", str(with_openvino[-1].folder / "openvino"),
         "--length", "24", "--calls", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    # 2 layers of a 128-wide BERT with a 512-wide FFN, 32 x 24 tokens: q, k, v, output (4 x 128 x 128), FFN
    # (2 x 128 x 512) and attention's two products (2 x 24 x 128 per token), 2 operations per multiply-add
    tokens = 32 * 24
    expected = 2 * 2 * tokens * (4 * 128 * 128 + 2 * 128 * 512 + 2 * 24 * 128)
    assert expected <= result["ops_per_batch"] <= expected * 1.01  # plus the pooler and classifier on 32 rows only
    assert result["gemm_shape_mkn"] in ([tokens, 128, 512], [tokens, 512, 128])
    files = {row["file"] for row in result["rows"]}
    assert files == {"ORT fp32 (fused)", "ORT int8 dynamic", "OpenVINO fp32 IR", "OpenVINO NNCF int8"}
    for row in result["rows"]:
        assert row["gop_per_s"] > 0 and abs(sum(row["kernel_profile"].values()) - 1) < 0.2 and row["kernel_profile"]
    dynamic = next(r for r in result["rows"] if r["file"] == "ORT int8 dynamic")
    assert "QAttention" in dynamic["kernel_profile"] or "DynamicQuantizeMatMul" in dynamic["kernel_profile"]


def test_a_search_trial_is_timed_on_every_kept_file_and_takes_the_fastest(with_openvino):
    from edgepress.search.latency import ReferenceTimer
    from edgepress.search.study import deployable, trial_values

    outcome = with_openvino[-1]
    assert [path.name for path, _ in deployable(outcome)] == ["model_int8_dynamic.onnx", ir.INT8_NAME]

    class Recording(ReferenceTimer):  # the real timer, remembering each file's figure
        seen: dict[str, float] = {}

        def __call__(self, artifact: Path) -> float:
            self.seen[artifact.name] = super().__call__(artifact)
            return self.seen[artifact.name]

    timer = Recording(with_openvino[1].folder / "model.onnx", ["sports match goal", "the vote was close"] * 4, max_length=24, rounds=2)
    values = trial_values(outcome, timer)
    assert set(timer.seen) == {"model_int8_dynamic.onnx", ir.INT8_NAME}
    fastest = min(timer.seen, key=timer.seen.get)
    assert values["latency_ms"] == timer.seen[fastest] and values["latency_ratio"] == values["latency_ms"] / timer.baseline_ms
    variant = next(v for v in outcome.manifest["metrics"]["variants"].values() if v["file"].endswith(fastest))
    assert values["accuracy"] == variant["validation"]["accuracy"]
    path = next(p for p, _ in deployable(outcome) if p.name == fastest)
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)
    assert values["size_mb"] == size / 1e6
