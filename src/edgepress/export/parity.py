"""The parity check: torch and ONNX Runtime run the same real examples and must agree.

A failed check is an error, never a warning: an exported graph that computes something else is
worse than no export, because nothing downstream (quantization, benchmarks) would notice.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgepress.data.features import encode
from edgepress.errors import StageError
from edgepress.export.runtime import feeds

if TYPE_CHECKING:
    import onnxruntime as ort
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class ParityError(StageError):
    """ONNX Runtime's outputs differ from torch's beyond the tolerance."""


@dataclass(frozen=True)
class ParityCase:
    name: str  # e.g. "batch 1, 37 tokens" or "batch 8 padded to 120"
    inputs: dict[str, np.ndarray]


def parity_cases(
    tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, count: int
) -> list[ParityCase]:
    """``count`` real texts of spread-out token lengths, each alone (batch 1, no padding), then all
    of them in one padded batch, where the attention mask has to do its work."""
    texts = {k: v for k, v in rows.items() if k in ("text", "text_pair")}
    lengths = [len(ids) for ids in encode(tokenizer, texts, max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    spread = np.linspace(0, len(order) - 1, min(count, len(order)))
    picks = list(dict.fromkeys(int(order[round(i)]) for i in spread))  # shortest to longest, no repeats
    chosen = {k: [v[i] for i in picks] for k, v in texts.items()}
    cases = []
    for i in range(len(picks)):
        single = dict(encode(tokenizer, {k: v[i : i + 1] for k, v in chosen.items()}, max_length, return_tensors="np"))
        cases.append(ParityCase(f"batch 1, {single['input_ids'].shape[1]} tokens", single))
    batch = dict(encode(tokenizer, chosen, max_length, padding=True, return_tensors="np"))
    cases.append(ParityCase(f"batch {len(picks)} padded to {batch['input_ids'].shape[1]}", batch))
    return cases


def torch_references(model: "PreTrainedModel", cases: list[ParityCase]) -> list[np.ndarray]:
    """The torch logits of every case, computed once and compared with every ONNX variant."""
    import torch

    model.eval()
    accepted = inspect.signature(model.forward).parameters  # e.g. DistilBERT takes no token_type_ids
    outputs = []
    with torch.inference_mode():
        for case in cases:
            inputs = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in case.inputs.items() if k in accepted}
            outputs.append(model(**inputs).logits.float().numpy())
    return outputs


def check_parity(
    session: "ort.InferenceSession",
    cases: list[ParityCase],
    references: list[np.ndarray],
    atol: float,
    label: str,
) -> dict:
    """Compare every case; raise ParityError listing the differences when any is out of tolerance.

    An argmax disagreement counts only where torch's top two logits are more than ``atol`` apart:
    a near-tie can flip within the tolerance, and that flip says nothing about the export."""
    rows = []
    for case, reference in zip(cases, references):
        got = np.asarray(session.run(None, feeds(session, case.inputs))[0], dtype=np.float32)
        if got.shape != reference.shape:
            raise ParityError(f"{label}: output shape {got.shape} differs from torch's {reference.shape} on {case.name}; re-export")
        rows.append({"case": case.name, "max_abs_diff": float(np.abs(got - reference).max()), "argmax_disagreements": _flips(reference, got, atol)})
    report = {
        "tolerance": atol,
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "argmax_disagreements": sum(r["argmax_disagreements"] for r in rows),
        "examples": sum(len(ref) for ref in references),
        "cases": rows,
    }
    report["passed"] = report["max_abs_diff"] <= atol and report["argmax_disagreements"] == 0
    if not report["passed"]:
        worst = ", ".join(f"{r['case']}: {r['max_abs_diff']:.2e}" for r in rows)
        raise ParityError(
            f"parity check failed for {label}: max |logit difference| {report['max_abs_diff']:.2e} against a tolerance "
            f"of {atol:.0e}, {report['argmax_disagreements']} argmax disagreement(s) ({worst}); the ONNX graph does not "
            "compute what the torch model does: try exporter: torch or another opset, and report it with --debug output"
        )
    return report


def _flips(reference: np.ndarray, got: np.ndarray, atol: float) -> int:
    if reference.shape[-1] < 2:
        return 0  # a regression head has no argmax
    top2 = np.sort(reference, axis=-1)[..., -2:]  # [batch, labels] or, per token, [batch, pieces, tags]
    decided = (top2[..., 1] - top2[..., 0]) > atol
    return int(((reference.argmax(-1) != got.argmax(-1)) & decided).sum())
