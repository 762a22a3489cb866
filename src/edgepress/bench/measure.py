"""Timing every artifact on the same inputs, interleaved, at each thread count and batch shape.

ONNX models run through the standalone runner's session and timing loop (runner.py); torch models
run in this process with PyTorch, in the same loop, so that the numbers are comparable. On the
``cuda`` target, torch models run on the GPU in fp32 and again in fp16 (two rows), and ONNX models
on ONNX Runtime's CUDA execution provider (TensorRT's first when ``bench.tensorrt``); every timed
call waits for the GPU to finish.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgepress.bench import runner
from edgepress.bench.artifacts import Artifact
from edgepress.data.features import encode, text_slice
from edgepress.errors import TargetError

if TYPE_CHECKING:
    from edgepress.recipe.deploy import BenchSection

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

    def __init__(self, artifact: Artifact, rows: dict[str, list], cfg: "BenchSection", half: bool = False):
        from transformers import AutoTokenizer

        self.artifact, self.half = artifact, half
        self.name = artifact.name + (" fp16" if half else "")
        self.cuda = cfg.target == "cuda"
        self.providers = cuda_providers(cfg.tensorrt) if self.cuda and artifact.kind == "onnx" else None
        # a model with its tokenizer takes one raw text per call: it has the batch-1 case only
        self.cases = {"batch 1": [{"text": np.array([t])} for t in rows["text"]]} if artifact.bundle else encoded_cases(AutoTokenizer.from_pretrained(artifact.folder), rows, cfg)
        self.parameters = parameters_of(artifact)
        self.memory_mb: dict[int, Any] = {}

    def calls(self, threads: int) -> dict[str, list[Callable[[], Any]]]:
        """Argument-less calls per case; inputs are converted before, not inside, the timed call.
        Each thread count opens its model afresh (a torch model too), so that the memory figure
        is that of one session at that setting, for torch as for ONNX Runtime."""
        before = runner.rss_mb()
        opener = {"torch": self._torch, "inc": self._inc, "openvino": self._openvino}.get(self.artifact.kind, self._onnx)
        prepare, run = opener(threads)
        prepared = {case: [prepare(x) for x in inputs] for case, inputs in self.cases.items()}
        run(next(iter(prepared.values()))[0])
        self.memory_mb[threads] = runner.memory_added(before)
        return {case: [lambda x=x: run(x) for x in inputs] for case, inputs in prepared.items()}

    def _onnx(self, threads: int) -> tuple[Callable, Callable]:
        # session.run copies the outputs to host memory, so it returns when the GPU is done
        if self.artifact.bundle:
            from edgepress.export.bundle import open_bundle

            session = open_bundle(self.artifact.path, threads)
            return (lambda example: example), (lambda feeds: session.run(None, feeds))
        session = runner.open_session(str(self.artifact.path), threads, self.providers)
        return (lambda example: runner.feeds_for(session, example)), (lambda feeds: session.run(None, feeds))

    def _openvino(self, threads: int) -> tuple[Callable, Callable]:
        """An IR compiled for this CPU at the artifact's precision, one stream (latency), ``threads`` threads."""
        from edgepress.export import ir

        compiled = ir.compile_ir(self.artifact.path, self.artifact.precision or "f32", threads)
        request = compiled.create_infer_request()  # reused, as a serving loop would
        output = compiled.output(0)
        return (lambda example: ir.feeds(compiled, example)), (lambda feeds: request.infer(feeds)[output])

    def _torch(self, threads: int) -> tuple[Callable, Callable]:
        import torch

        from edgepress.models import auto_class, folder_task, from_pretrained

        torch.set_num_threads(threads)  # process-wide: every torch artifact of this round uses it
        device = "cuda" if self.cuda else "cpu"
        model = from_pretrained(auto_class(folder_task(self.artifact.path)), self.artifact.path, use_safetensors=True).eval().to(device)
        model = model.half() if self.half else model
        names = set(inspect.signature(model.forward).parameters)  # through decorators (Transformers 5 wraps forward)

        def run(tensors: dict) -> Any:
            with torch.inference_mode():
                logits = model(**tensors).logits
            if self.cuda:
                torch.cuda.synchronize()  # kernels run asynchronously: time them, not their launch
            return logits

        return (lambda example: {k: torch.from_numpy(v).to(device) for k, v in example.items() if k in names}), run


    def _inc(self, threads: int) -> tuple[Callable, Callable]:
        """An INC int8 model, compiled by Inductor with frozen weights: how INC says to run it (its
        int8 kernels exist only once compiled). Compiled afresh per thread count; the compile is the
        warm-up call, outside the timing."""
        import torch
        from transformers import AutoTokenizer

        from edgepress.compress.quantization import inc

        torch.set_num_threads(threads)
        loaded = inc.load(self.artifact.path)
        names = inc.Inputs(loaded, AutoTokenizer.from_pretrained(self.artifact.path), 8).names
        model = inc.compiled(loaded)

        def run(args: tuple) -> Any:
            with torch.no_grad():
                return model(*args)[0]  # saved with plain tuple outputs: the logits first

        return (lambda example: tuple(torch.from_numpy(example[n]) for n in names)), run


def parameters_of(artifact: Artifact) -> int:
    if artifact.kind == "openvino":
        from edgepress.export.ir import parameter_count

        return parameter_count(artifact.path)
    if artifact.kind == "inc":
        from edgepress.compress.quantization import inc
        return inc.parameter_count(artifact.path)
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
    if cfg.target == "cuda":
        return sorted(set(cfg.threads or [1]))  # the GPU does the work; CPU threads only feed it
    return sorted(set(cfg.threads or [1, os.cpu_count() or 1]))


def cuda_providers(tensorrt: bool) -> list[str]:
    """ONNX Runtime providers for the cuda target; an error that says how to get them when missing."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise TargetError(
            f"target cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider; install onnxruntime-gpu "
            "in its place (pip uninstall onnxruntime && pip install onnxruntime-gpu), or bench torch models only"
        )
    if tensorrt and "TensorrtExecutionProvider" not in available:
        raise TargetError("bench.tensorrt is true but this onnxruntime has no TensorrtExecutionProvider; install TensorRT or set it false")
    return (["TensorrtExecutionProvider"] if tensorrt else []) + ["CUDAExecutionProvider", "CPUExecutionProvider"]


def check_cuda(artifacts: list[Artifact], cfg: "BenchSection") -> None:
    """Fail before loading anything when the cuda target cannot run these artifacts here."""
    if cpu_only := [a.name for a in artifacts if a.kind in ("inc", "openvino")]:
        raise TargetError(f"target cuda: {', '.join(cpu_only)} are CPU models (Intel Neural Compressor int8, OpenVINO IR); bench them with --target cpu")
    if any(a.kind == "torch" for a in artifacts):
        import torch

        if not torch.cuda.is_available():
            raise TargetError(
                f"target cuda: PyTorch sees no CUDA device (torch {torch.__version__}); run on a machine with an NVIDIA GPU "
                "and a CUDA build of torch, or use --target cpu"
            )
    if any(a.kind == "onnx" for a in artifacts):
        cuda_providers(cfg.tensorrt)


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def measure_all(artifacts: list[Artifact], rows: dict[str, list], cfg: "BenchSection") -> list[dict[str, Any]]:
    """Statistics per artifact, thread count and case; every case times all artifacts interleaved."""
    loaded = [Loaded(a, rows, cfg, half) for a in artifacts for half in _precisions(a, cfg)]
    latency: dict[str, dict] = {item.name: {} for item in loaded}
    for threads in thread_counts(cfg):
        calls = {item.name: item.calls(threads) for item in loaded}
        for case in case_names(cfg):
            if not all(c.get(case) for c in calls.values() if case in c):
                continue  # fewer texts than one batch of this size
            log.info("bench: %d thread(s), %s", threads, case)
            times = runner.time_interleaved({name: c[case] for name, c in calls.items() if case in c}, cfg.rounds, cfg.warmup)
            for name, values in times.items():
                batch = int(case.split()[1])
                latency[name].setdefault(str(threads), {})[case] = runner.statistics(values, cfg.rounds, batch * len(values))
    return [_row(item, latency[item.name]) for item in loaded]


def _precisions(artifact: Artifact, cfg: "BenchSection") -> tuple[bool, ...]:
    """(fp16?) per row: torch models on a GPU are timed in fp32 and fp16, everything else as stored."""
    return (False, True) if cfg.target == "cuda" and artifact.kind == "torch" else (False,)


def _row(item: Loaded, latency: dict[str, dict]) -> dict[str, Any]:
    row = artifact_row(item.artifact, latency, {str(k): v for k, v in item.memory_mb.items()}, item.parameters)
    if item.half:  # its accuracy is the fp32 model's, which this row does not measure
        row.update(name=item.name, precision="fp16", test={}, test_measured_by=None)
    return row


RUNTIMES = {"torch": "pytorch", "onnx": "onnxruntime", "inc": "pytorch-inductor", "openvino": "openvino"}


def precision_of(artifact: Artifact) -> str:
    """What a row computes in: bf16 for an OpenVINO IR run in bf16, else read from the file's name
    (edgepress names its int8 and fp16 files so, ONNX and OpenVINO alike), else fp32."""
    name = artifact.path.name
    if artifact.precision and artifact.precision != "f32":  # bf16: an IR run in bf16
        return artifact.precision
    return "int8" if artifact.kind == "inc" or "int8" in name else "fp16" if "fp16" in name else "fp32"


def artifact_row(artifact: Artifact, latency: dict[str, dict], memory_mb: dict[str, Any], parameters: int | None = None) -> dict[str, Any]:
    """One entry of bench.json's ``artifacts`` (ratios are added by the report)."""
    return {
        "name": artifact.name,
        "kind": artifact.kind,
        "runtime": RUNTIMES.get(artifact.kind, artifact.kind),
        "precision": precision_of(artifact),
        "path": str(artifact.path),
        "bytes": artifact.bytes(),
        "parameters": parameters_of(artifact) if parameters is None else parameters,
        "test": artifact.test,
        "test_measured_by": artifact.test_source,
        "session_rss_mb": memory_mb,
        "latency": latency,
    }
