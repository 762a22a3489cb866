"""Latency of ONNX models under ONNX Runtime, with numpy and onnxruntime only.

This file imports nothing from edgepress, torch or transformers, so that it can be copied to a
device (a Raspberry Pi, a phone under Termux, an emulated arm64 Python) and run there alone:

    python runner.py --inputs inputs.npz --model a=model_a.onnx --model b=model_b.onnx --json out.json

``--outputs out.npz`` also saves every model's first output (the logits) per example, under
``<name>.<i>``, so that the machine that sent the models can check the device predicts the same.

``inputs.npz`` holds already tokenized examples: ``input_ids.<i>`` and ``attention_mask.<i>``
(and optionally ``token_type_ids.<i>``) for i = 0, 1, ..., each of shape [batch, length].
Models are measured interleaved: each round runs every example through every model, in an order
that alternates between rounds, so that drift on a shared machine hits all models alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import onnxruntime as ort

SCHEMA = "edgepress.runner/1"


def open_session(path: str, threads: int, providers: list[str] | None = None, config: dict[str, str] | None = None) -> ort.InferenceSession:
    """A session at ``threads`` intra-op threads; ``config``: session config entries (e.g. thread-pool spinning)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])


def load_inputs(path: str) -> list[dict[str, np.ndarray]]:
    """The examples of an inputs.npz file (see the module doc), in index order."""
    arrays = np.load(path)
    count = len([k for k in arrays.files if k.startswith("input_ids.")])
    return [{k.split(".")[0]: arrays[k] for k in arrays.files if k.endswith(f".{i}")} for i in range(count)]


def feeds_for(session: ort.InferenceSession, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The session's inputs from the example; token type ids are zeros when the example has none."""
    feeds = {}
    for item in session.get_inputs():
        value = example.get(item.name)
        if value is None and item.name == "token_type_ids":
            value = np.zeros_like(example["input_ids"])
        if value is None:
            raise SystemExit(f"error: the model needs input {item.name!r}, which inputs.npz does not have")
        feeds[item.name] = value.astype(np.int64)
    return feeds


def summarize(times_ms: list[float]) -> dict[str, float]:
    values = np.asarray(times_ms)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p90_ms": round(float(np.percentile(values, 90)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
        "std_ms": round(float(values.std()), 4),
        "runs": int(values.size),
    }


def rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def time_interleaved(calls: dict[str, list], rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds of every call, per name. ``calls[name]`` is a list of argument-less callables
    (one per example); each round runs every name's calls, the names in alternating order."""
    for name, group in calls.items():
        for call in group[:warmup]:
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            for call in calls[name]:
                start = time.perf_counter()
                call()
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def statistics(times_ms: list[float], rounds: int, sequences: int) -> dict[str, Any]:
    """``summarize`` plus each round's median (the gate compares their median) and the throughput
    of ``sequences`` processed by all the timed calls together."""
    return {
        **summarize(times_ms),
        "round_p50_ms": [round(float(np.median(r)), 4) for r in np.array_split(np.asarray(times_ms), rounds)],
        "sequences_per_s": round(sequences / (sum(times_ms) / 1000), 2),
    }


def memory_added(before: float | None) -> float | None:
    """MB of resident memory gained since ``before`` (a ``rss_mb`` reading); None where unknown."""
    after = rss_mb()
    return round(after - before, 1) if before is not None and after is not None else None


def measure(models: dict[str, str], examples: list[dict], threads: int, rounds: int, warmup: int = 3) -> dict[str, dict]:
    """Per model: latency statistics of single calls over ``rounds`` passes of every example, the
    throughput in sequences per second, and the memory its session added when opened and warmed up."""
    calls, memory = {}, {}
    for name, path in models.items():
        before = rss_mb()
        session = open_session(path, threads)
        feeds = [feeds_for(session, e) for e in examples]
        session.run(None, feeds[0])
        memory[name] = memory_added(before)
        calls[name] = [lambda s=session, f=f: s.run(None, f) for f in feeds]
    times = time_interleaved(calls, rounds, warmup)
    sequences = sum(len(e["input_ids"]) for e in examples) * rounds
    return {name: {**statistics(t, rounds, sequences), "session_rss_mb": memory[name]} for name, t in times.items()}


def first_outputs(models: dict[str, str], examples: list[dict]) -> dict[str, np.ndarray]:
    """Each model's first output for each example, keyed ``<name>.<i>`` (one thread: results are
    the kernels', not the scheduling's)."""
    saved = {}
    for name, path in models.items():
        session = open_session(path, 1)
        for i, example in enumerate(examples):
            saved[f"{name}.{i}"] = session.run(None, feeds_for(session, example))[0]
    return saved


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "sve", "i8mm", "bf16")


def cpu_description() -> tuple[str, list[str]]:
    """CPU model name and the instruction sets that matter for int8 kernels (Linux /proc/cpuinfo)."""
    name, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and name == platform.machine():
                    name = value.strip()
                if key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return name, [f for f in ISA_FLAGS if f in flags]


def environment() -> dict[str, Any]:
    cpu, isa = cpu_description()
    return {
        "cpu": cpu,
        "isa": isa,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Latency of ONNX models under ONNX Runtime (numpy + onnxruntime only).")
    parser.add_argument("--inputs", required=True, help="inputs.npz with input_ids.<i>, attention_mask.<i>, ...")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of an ONNX model (repeatable)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="intra-op thread counts to measure")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the examples per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model before the first round")
    parser.add_argument("--json", help="write the results here (default: print them)")
    parser.add_argument("--outputs", help="also save each model's first output per example to this .npz")
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.model)
    examples = load_inputs(args.inputs)
    result = {
        "schema": SCHEMA,
        "environment": environment(),
        "examples": len(examples),
        "rounds": args.rounds,
        "threads": {str(t): measure(models, examples, t, args.rounds, args.warmup) for t in args.threads},
    }
    if args.outputs:
        np.savez(args.outputs, **first_outputs(models, examples))
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
