"""The standalone latency runner: real ONNX Runtime sessions on a tiny hand-built graph."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from conftest import assert_schema_valid
from onnx import TensorProto, helper

from edgepress.bench import runner

RUNNER = Path(runner.__file__)


def tiny_model(path: Path, repeats: int = 1) -> Path:
    """logits = sum over tokens of (input_ids * attention_mask), as float, [batch, 1]; ``repeats``
    chains extra MatMuls so that one model is measurably slower than the other."""
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("Cast", ["masked"], ["x0"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["x0", "axes"], ["s0"], keepdims=1),
    ]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1], [1.0])
    for i in range(repeats):
        nodes.append(helper.make_node("MatMul", [f"s{i}", "w"], [f"s{i + 1}"]))
    nodes.append(helper.make_node("Identity", [f"s{repeats}"], ["logits"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1]), weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def inputs_file(path: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(count):
        length = int(rng.integers(3, 12))
        arrays[f"input_ids.{i}"] = rng.integers(1, 100, (1, length))
        arrays[f"attention_mask.{i}"] = np.ones((1, length), dtype=np.int64)
    np.savez(path, **arrays)
    return path


def test_statistics_are_ordered_and_every_call_is_counted(tmp_path):
    examples = runner.load_inputs(str(inputs_file(tmp_path / "inputs.npz")))
    assert len(examples) == 6 and set(examples[0]) == {"input_ids", "attention_mask"}
    models = {"a": str(tiny_model(tmp_path / "a.onnx")), "b": str(tiny_model(tmp_path / "b.onnx", repeats=3))}
    result = runner.measure(models, examples, threads=1, rounds=4)
    for stats in result.values():
        assert stats["runs"] == 6 * 4
        assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
        assert stats["std_ms"] >= 0 and stats["sequences_per_s"] > 0


def test_runner_needs_only_numpy_and_onnxruntime(tmp_path):
    """Run as a script with torch, transformers and edgepress made unimportable: it must not notice."""
    poison = tmp_path / "poison"
    (poison / "edgepress").mkdir(parents=True)
    for module in ("torch.py", "transformers.py", "edgepress/__init__.py", "optimum.py"):
        (poison / module).write_text("raise ImportError('the runner must not import this')\n")
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--inputs", str(inputs_file(tmp_path / "in.npz")), "--model",
         f"tiny={tiny_model(tmp_path / 'm.onnx')}", "--threads", "1", "2", "--rounds", "2", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(poison), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["schema"] == runner.SCHEMA and set(result["threads"]) == {"1", "2"}
    assert result["threads"]["1"]["tiny"]["runs"] == 6 * 2
    assert_schema_valid(result, "runner")


def test_a_missing_model_input_is_one_line(tmp_path):
    np.savez(tmp_path / "in.npz", **{"input_ids.0": np.ones((1, 4), dtype=np.int64)})
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--inputs", str(tmp_path / "in.npz"), "--model", f"m={tiny_model(tmp_path / 'm.onnx')}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "needs input 'attention_mask'" in done.stderr and "Traceback" not in done.stderr
