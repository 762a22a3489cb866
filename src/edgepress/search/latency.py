"""Trial latency that stays comparable over a long search on a shared machine.

Each trial's ONNX file is timed interleaved with a fixed reference file on the same texts (batch 1,
real lengths); its latency is ``its p50 / the reference's p50 in the same rounds`` times the
reference's p50 recorded once for the study. Load that drifts over minutes or hours slows both
alike, so the ratio holds; the recorded baseline turns it back into milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepress.bench import runner
from edgepress.data.features import encode
from edgepress.errors import EdgepressError


class ReferenceTimer:
    """``timer(artifact) -> ms``; ``baseline_ms`` is the reference's own p50, measured on first use
    unless given (a resumed study passes the one it recorded)."""

    def __init__(self, reference: Path, texts: list[str], max_length: int = 128, threads: int = 1, rounds: int = 5):
        self.reference, self.texts, self.max_length = Path(reference), list(texts), max_length
        self.threads, self.rounds = threads, rounds
        self.baseline_ms: float | None = None

    def __call__(self, artifact: Path) -> float:
        if artifact.suffix not in (".onnx", ".xml"):
            raise EdgepressError(f"search: latency is measured on ONNX and OpenVINO files; end the recipe with export or quantize, not {artifact.name}")
        calls = {"reference": self._calls(self.reference), "trial": self._calls(artifact)}
        times = runner.time_interleaved(calls, self.rounds)
        reference, trial = (float(np.median(times[k])) for k in ("reference", "trial"))
        if self.baseline_ms is None:
            self.baseline_ms = reference
        return trial / reference * self.baseline_ms

    def _calls(self, path: Path) -> list:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path.parent)
        if path.suffix == ".xml":  # an OpenVINO IR, in f32 (as the quantize stage scored it)
            from edgepress.export import ir

            compiled = ir.compile_ir(path, "f32", self.threads)
            request = compiled.create_infer_request()
            inputs = [ir.feeds(compiled, dict(encode(tokenizer, {"text": [t]}, self.max_length, return_tensors="np"))) for t in self.texts]
            return [lambda f=f: request.infer(f) for f in inputs]
        session = runner.open_session(str(path), self.threads)
        feeds = [runner.feeds_for(session, dict(encode(tokenizer, {"text": [t]}, self.max_length, return_tensors="np"))) for t in self.texts]
        return [lambda f=f: session.run(None, f) for f in feeds]
