"""ONNX Runtime sessions and evaluation, shared by the export, quantize and bench stages."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from edgepress.data.features import encode, text_slice
from edgepress.errors import ModelError
from edgepress.metrics import evaluate_splits, per_row
from edgepress.tasks.tagging import is_words, stack

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    from transformers import PreTrainedTokenizerBase

    from edgepress.data.load import SplitData


def load_onnx(path: str | Path) -> "onnx.ModelProto":
    """Read and check an ONNX file; anything else is one error that names the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model {path} does not exist; check the path or run the export stage first")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path))  # by path, so that models over 2 GB are checked too
    except Exception as exc:  # protobuf and checker raise many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path} is not a valid ONNX model ({first[:200]}); re-export it with `edgepress export`") from None
    return model


def open_session(
    path: str | Path, providers: Iterable[str] = ("CPUExecutionProvider",), threads: int | None = None
) -> "ort.InferenceSession":
    """An InferenceSession for an ``.onnx`` or ``.ort`` file, with a readable error for a bad file."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model {path} does not exist; check the path or run the export stage first")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        if path.suffix == ".onnx":
            load_onnx(path)  # only on failure: the checker names the problem more clearly than the session
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load {path} ({first[:300]}); re-export it") from None


def feeds(session: "ort.InferenceSession", encoded: dict) -> dict[str, np.ndarray]:
    """The inputs this graph takes, as int64 arrays (tokenizers may return more, e.g. token_type_ids)."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in encoded]
    if missing:
        raise ModelError(f"the ONNX graph wants inputs {', '.join(missing)} that the tokenizer does not produce")
    return {n: np.asarray(encoded[n], dtype=np.int64) for n in names}


def onnx_logits(
    session: "ort.InferenceSession",
    tokenizer: "PreTrainedTokenizerBase",
    rows: dict[str, list],
    max_length: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits for ``rows`` (``text``, optional ``text_pair``), each batch padded to its longest row;
    for tagged sentences ``[sentences, words, tags]``, as ``metrics.torch_logits`` gives them."""
    return batched_logits(lambda encoded: session.run(None, feeds(session, encoded))[0], tokenizer, rows, max_length, batch_size)


def batched_logits(
    run: Callable[[dict], np.ndarray], tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, batch_size: int
) -> np.ndarray:
    """``onnx_logits`` for any runtime: ``run`` maps one padded batch (numpy arrays) to its logits."""
    chunks: list[np.ndarray] = []
    for start in range(0, len(rows["text"]), batch_size):
        batch = text_slice(rows, start, start + batch_size)
        encoded = encode(tokenizer, batch, max_length, padding=True, return_tensors="np")
        chunks.extend(per_row(encoded, np.asarray(run(encoded), dtype=np.float32), batch))
    return stack(chunks) if is_words(rows) else np.concatenate(chunks)


def evaluate_onnx(
    session: "ort.InferenceSession",
    tokenizer: "PreTrainedTokenizerBase",
    data: "SplitData",
    max_length: int,
    splits: tuple[str, ...] = ("validation", "test"),
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` of an ONNX classifier, like ``evaluate_torch``."""
    return evaluate_splits(data, splits, lambda rows: onnx_logits(session, tokenizer, rows, max_length, batch_size))


def op_counts(model: "onnx.ModelProto") -> dict[str, int]:
    """Nodes per op type in the main graph, most common first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


@contextlib.contextmanager
def quiet_onnxruntime():
    """ONNX Runtime's Python tools (optimizer, quantizer, converter) log every step, on loggers such
    as ``fusion_base`` or the root logger, and print some; keep that for --debug. What matters
    (fused-op counts, accuracies) is reported by edgepress itself."""
    if logging.getLogger("edgepress").isEnabledFor(logging.DEBUG):
        yield
        return
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)
