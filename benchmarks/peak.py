"""How close the student's files come to this CPU's matrix-multiply peak, and where their time goes.

    python benchmarks/peak.py runs/sst2-tf5 [--openvino runs/runtimes/openvino-run/01-quantize/openvino]

1. The peak: one MatMulInteger (int8) and one MatMul (fp32) node, in ONNX Runtime, on the shape of
   the student's own largest linear layer at batch 32 x 128 (tokens x in x out), median of 15 calls,
   at 1 thread and all cores: GOP/s (2 x M x K x N per call).
2. The work: the multiply-adds of every MatMul/Gemm of the plain export (model.onnx) at batch 32 x
   128, from ONNX shape inference with those sizes fixed (attention's two products included). Every
   file of the student does this same arithmetic, whatever its precision.
3. Each file (ORT fp32 fused, ORT int8 dynamic and static, OpenVINO fp32 IR and NNCF int8 where
   given): seconds per batch of 32 x 128, its GOP/s, and that as a share of the int8 (and fp32)
   peak; then its kernel profile: ONNX Runtime's own profiler, OpenVINO's per-layer counters
   (PERF_COUNT), as each operator type's share of the summed kernel time.

Prints a table and writes benchmarks/results/peak.json with the CPU flags that matter.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import stage_folder

HERE = Path(__file__).resolve().parent
BATCH, LENGTH, CALLS = 32, 128, 15  # --length and --calls change the last two (a tiny test model has few positions)


def main() -> None:
    global LENGTH, CALLS
    args = parse_args()
    LENGTH, CALLS = args.length, args.calls
    from edgepress.bench.report import machine

    export, quantize = (stage_folder(args.run, name) for name in ("export", "quantize"))
    ops, shape = work(export / "model.onnx")
    threads = sorted({1, os.cpu_count() or 1})
    peaks = {f"{kind} {t}T": peak(kind, shape, t) for kind in ("int8", "fp32") for t in threads}
    files = {"ORT fp32 (fused)": export / "model_optimized.onnx", "ORT int8 dynamic": quantize / "model_int8_dynamic.onnx",
             "ORT int8 static": quantize / "model_int8_static.onnx"}  # fmt: skip
    if args.openvino:
        files |= {"OpenVINO fp32 IR": args.openvino / "openvino_model.xml", "OpenVINO NNCF int8": args.openvino / "openvino_model_int8.xml"}
    inputs = batch_inputs(export)
    rows = []
    for name, path in ((n, p) for n, p in files.items() if p.is_file()):
        for t in threads:
            seconds, profile = timed(path, inputs, t)
            gops = ops / seconds / 1e9
            rows.append({"file": name, "threads": t, "seconds_per_batch": seconds, "sequences_per_s": BATCH / seconds, "gop_per_s": gops,
                         "share_of_int8_peak": gops / peaks[f"int8 {t}T"], "share_of_fp32_peak": gops / peaks[f"fp32 {t}T"],
                         "kernel_profile": profile})  # fmt: skip
    result = {"machine": machine(), "batch": [BATCH, LENGTH], "gemm_shape_mkn": shape, "ops_per_batch": ops, "peak_gop_per_s": peaks, "rows": rows}
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


def work(path: Path) -> tuple[float, list[int]]:
    """Operations (2 per multiply-add) of every MatMul/Gemm at batch x length, and the largest one's M, K, N."""
    import onnx

    model = onnx.load(str(path))
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        dims[0].dim_value, dims[1].dim_value = BATCH, LENGTH
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    shapes |= {i.name: list(i.dims) for i in model.graph.initializer}
    total, largest = 0.0, (0, [0, 0, 0])
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.output[0] not in shapes or node.input[0] not in shapes:
            continue
        out, k = shapes[node.output[0]], shapes[node.input[0]][-1]
        ops = 2.0 * float(np.prod(out)) * k
        total += ops
        if node.input[1] in shapes and len(shapes[node.input[1]]) == 2 and ops > largest[0]:
            largest = (ops, [int(np.prod(out[:-1])), k, out[-1]])
    return total, largest[1]


def peak(kind: str, shape: list[int], threads: int) -> float:
    """GOP/s of one int8 (MatMulInteger) or fp32 (MatMul) node of this shape in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    if kind == "int8":
        a, weight, op, out = rng.integers(0, 255, (m, k), dtype=np.uint8), rng.integers(-127, 127, (k, n), dtype=np.int8), "MatMulInteger", TensorProto.INT32
    else:
        a, weight, op, out = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32), "MatMul", TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w"], ["y"])], "peak",
        [helper.make_tensor_value_info("a", helper.np_dtype_to_tensor_dtype(a.dtype), [m, k])],
        [helper.make_tensor_value_info("y", out, [m, n])], [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), options)
    return 2.0 * m * k * n / median_seconds(lambda: session.run(None, {"a": a})) / 1e9


def batch_inputs(export: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export)
    texts = ["a sentence long enough to be cut at the padded length of the batch"] * BATCH
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}


def timed(path: Path, inputs: dict[str, np.ndarray], threads: int) -> tuple[float, dict[str, float]]:
    """Median seconds per batch, and each operator type's share of kernel time."""
    if path.suffix == ".xml":
        from edgepress.export import ir

        compiled = ir.openvino().Core().compile_model(str(path), "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads,
                                                                            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})  # fmt: skip
        request = compiled.create_infer_request()
        feeds = ir.feeds(compiled, inputs)
        seconds = median_seconds(lambda: request.infer(feeds))
        kernel = Counter()
        for item in request.profiling_info:
            kernel[f"{item.node_type} ({item.exec_type})"] += item.real_time.total_seconds()
        return seconds, shares(kernel)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling, options.profile_file_prefix = True, os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in inputs.items() if k in names}
    seconds = median_seconds(lambda: session.run(None, feeds))
    kernel = Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernel[event["args"]["op_name"]] += event["dur"] / 1e6
    return seconds, shares(kernel)


def shares(kernel: Counter) -> dict[str, float]:
    total = sum(kernel.values()) or 1.0
    return {op: round(t / total, 4) for op, t in kernel.most_common(8)}


def median_seconds(call) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def report(result: dict) -> None:
    env = result["machine"]
    print(f"{env['cpu']} ({', '.join(env['isa'])}), {env['cores']} cores; batch {BATCH} x {LENGTH}; "
          f"{result['ops_per_batch'] / 1e9:.1f} GOP per batch; largest GEMM M, K, N = {result['gemm_shape_mkn']}")  # fmt: skip
    print("peak GOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in result["peak_gop_per_s"].items()))
    print(f"{'file':22} {'T':>2} {'seq/s':>8} {'GOP/s':>8} {'of int8 peak':>13} {'of fp32 peak':>13}  top kernels")
    for row in result["rows"]:
        top = ", ".join(f"{op} {100 * s:.0f}%" for op, s in list(row["kernel_profile"].items())[:4])
        print(f"{row['file']:22} {row['threads']:>2} {row['sequences_per_s']:8.1f} {row['gop_per_s']:8.1f} "
              f"{100 * row['share_of_int8_peak']:12.1f}% {100 * row['share_of_fp32_peak']:12.1f}%  {top}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with export and quantize stages")
    parser.add_argument("--openvino", type=Path, help="a folder with openvino_model.xml and openvino_model_int8.xml")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "peak.json")
    parser.add_argument("--length", type=int, default=LENGTH, help="tokens per sequence of the timed batch")
    parser.add_argument("--calls", type=int, default=CALLS, help="timed calls per file and thread count (median)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
