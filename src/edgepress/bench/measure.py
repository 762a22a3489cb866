"""Timing every artifact on the same inputs, interleaved, at each thread count and batch shape.

ONNX models run through the standalone runner's session and timing loop (runner.py); torch models
run in this process with PyTorch, in the same loop, so that the numbers are comparable.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgepress.bench import runner
from edgepress.bench.artifacts import Artifact
from edgepress.features import encode, text_slice

if TYPE_CHECKING:
    from edgepress.sections import BenchSection

log = logging.getLogger(__name__)


def case_names(cfg: "BenchSection") -> list[str]:
    return ["batch 1"] + [f"batch {b} x {cfg.max_seq_length}" for b in cfg.batch_sizes]


def encoded_cases(tokenizer, rows: dict[str, list], cfg: "BenchSection") -> dict[str, list[dict[str, np.ndarray]]]:
    """Batch 1 on each text's real length; padded batches of ``batch_sizes`` over the same texts."""
    length, count = cfg.max_seq_length, len(rows["text"])

    def chunk(start: int, size: int, **kwargs: Any) -> dict[str, np.ndarray]:
        return dict(encode(tokenizer, text_slice(rows, start, start + size), length, return_tensors="np", **kwargs))

    cases = {"batch 1": [chunk(i, 1) for i in range(count)]}
    for size, name in zip(cfg.batch_sizes, case_names(cfg)[1:]):
        # full batches only, so that every call of a case has the same shape
        cases[name] = [chunk(i, size, padding="max_length") for i in range(0, count - size + 1, size)]
    return cases


class Loaded:
    """An artifact ready to run: callables per case for one thread count, its parameter count and memory."""

    def __init__(self, artifact: Artifact, rows: dict[str, list], cfg: "BenchSection"):
        from transformers import AutoTokenizer

        self.artifact = artifact
        self.cases = encoded_cases(AutoTokenizer.from_pretrained(artifact.folder), rows, cfg)
        self.parameters = parameters_of(artifact)
        self.memory_mb: dict[int, Any] = {}

    def calls(self, threads: int) -> dict[str, list[Callable[[], Any]]]:
        """Argument-less calls per case; inputs are converted before, not inside, the timed call.
        Each thread count opens its model afresh (a torch model too), so that the memory figure
        is that of one session at that setting, for torch as for ONNX Runtime."""
        before = runner.rss_mb()
        prepare, run = self._torch(threads) if self.artifact.kind == "torch" else self._onnx(threads)
        prepared = {case: [prepare(x) for x in inputs] for case, inputs in self.cases.items()}
        run(next(iter(prepared.values()))[0])
        after = runner.rss_mb()
        self.memory_mb[threads] = round(after - before, 1) if before is not None and after is not None else None
        return {case: [lambda x=x: run(x) for x in inputs] for case, inputs in prepared.items()}

    def _onnx(self, threads: int) -> tuple[Callable, Callable]:
        session = runner.open_session(str(self.artifact.path), threads)
        return (lambda example: runner.feeds_for(session, example)), (lambda feeds: session.run(None, feeds))

    def _torch(self, threads: int) -> tuple[Callable, Callable]:
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(threads)  # process-wide: every torch artifact of this round uses it
        model = AutoModelForSequenceClassification.from_pretrained(self.artifact.path, use_safetensors=True).eval()
        names = set(model.forward.__code__.co_varnames)

        def run(tensors: dict) -> Any:
            with torch.inference_mode():
                return model(**tensors).logits

        return (lambda example: {k: torch.from_numpy(v) for k, v in example.items() if k in names}), run


def parameters_of(artifact: Artifact) -> int:
    if artifact.kind == "torch":
        from safetensors import safe_open

        total = 0
        for path in artifact.path.glob("*.safetensors"):
            with safe_open(str(path), "np") as handle:
                total += sum(int(np.prod(handle.get_slice(k).get_shape())) for k in handle.keys())
        return total
    import onnx

    graph = onnx.load(str(artifact.path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)


def thread_counts(cfg: "BenchSection") -> list[int]:
    return sorted(set(cfg.threads or [1, os.cpu_count() or 1]))


def measure_all(artifacts: list[Artifact], rows: dict[str, list], cfg: "BenchSection") -> list[dict[str, Any]]:
    """Statistics per artifact, thread count and case; every case times all artifacts interleaved."""
    loaded = [Loaded(a, rows, cfg) for a in artifacts]
    latency: dict[str, dict] = {a.name: {} for a in artifacts}
    for threads in thread_counts(cfg):
        calls = {item.artifact.name: item.calls(threads) for item in loaded}
        for case in case_names(cfg):
            if not all(calls[name].get(case) for name in calls):
                continue  # fewer texts than one batch of this size
            log.info("bench: %d thread(s), %s", threads, case)
            times = runner.time_interleaved({name: c[case] for name, c in calls.items()}, cfg.rounds, cfg.warmup)
            for name, values in times.items():
                latency[name].setdefault(str(threads), {})[case] = _stats(values, case, cfg.rounds)
    return [_row(item, latency[item.artifact.name]) for item in loaded]


def _stats(values: list[float], case: str, rounds: int) -> dict[str, Any]:
    per_round = np.array_split(np.asarray(values), rounds)
    batch = int(case.split()[1])
    return {
        **runner.summarize(values),
        "round_p50_ms": [round(float(np.median(r)), 4) for r in per_round],
        "sequences_per_s": round(batch * len(values) / (sum(values) / 1000), 2),
    }


def _row(item: Loaded, latency: dict[str, dict]) -> dict[str, Any]:
    artifact = item.artifact
    return {
        "name": artifact.name,
        "kind": artifact.kind,
        "path": str(artifact.path),
        "bytes": artifact.bytes(),
        "parameters": item.parameters,
        "test": artifact.test,
        "test_measured_by": artifact.test_source,
        "session_rss_mb": {str(k): v for k, v in item.memory_mb.items()},
        "latency": latency,
    }
