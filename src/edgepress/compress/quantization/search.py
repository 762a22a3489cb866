"""Making one int8 model with ONNX Runtime's quantizer, judging it against fp32, and ranking nodes
by how much quantizing each alone moves the logits (the ones to keep in fp32 first)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepress.compress.quantization.configs import QuantConfig
from edgepress.errors import StageError
from edgepress.export.runtime import feeds, onnx_logits, open_session, quiet_onnxruntime
from edgepress.metrics import agreement, predictions_of, score, scores_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from edgepress.data.load import SplitData

WEIGHTED_OPS = ("MatMul", "Gemm", "Attention")


@dataclass
class Reference:
    """What every trial is judged against: the fp32 graph's validation predictions and score
    (accuracy; entity F1 for token classification)."""

    data: "SplitData"
    rows: dict[str, list]  # validation texts
    predictions: np.ndarray
    logits: np.ndarray
    validation: dict[str, float]  # fp32's validation metrics
    chance: float  # the score of always predicting the most common label (0 entity F1 for tags)

    @property
    def accuracy(self) -> float:
        return score(self.validation)


class Calibration:
    """Training texts for static calibration, at their real lengths: each batch is padded only to
    its longest text (``padding="longest"``), so that on short-text tasks the activation ranges are
    those of words, not of padding positions. ``"max_length"`` pads every text to ``max_length``.
    A new reader per quantization, since readers run dry."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", texts: dict[str, list], max_length: int, padding: str = "longest", batch: int = 8):
        from edgepress.data.features import encode

        count = len(texts["text"])
        self.pad_id = tokenizer.pad_token_id or 0
        self.batches = [
            dict(encode(tokenizer, {k: v[i : i + batch] for k, v in texts.items()}, max_length, padding=padding, return_tensors="np"))
            for i in range(0, count, batch)
        ]

    def reader(self, input_names: list[str], one_shape: bool = False):
        """``one_shape``: one text per call, all padded to the longest text, for the histogram
        calibrators (entropy, percentile), which stack the activations of all calls into one array."""
        from onnxruntime.quantization import CalibrationDataReader

        if one_shape:
            width = max(b["input_ids"].shape[1] for b in self.batches)
            rows = [{n: self._padded(b, n, width)[i : i + 1] for n in input_names} for b in self.batches for i in range(len(b["input_ids"]))]
        else:
            rows = [{n: self._padded(b, n, 0) for n in input_names} for b in self.batches]
        batches = iter(rows)

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(batches, None)

        return Reader()

    def _padded(self, batch: dict, name: str, width: int) -> np.ndarray:
        array = np.asarray(batch[name], dtype=np.int64)
        extra = width - array.shape[1]
        if extra <= 0:
            return array
        return np.pad(array, ((0, 0), (0, extra)), constant_values=self.pad_id if name == "input_ids" else 0)


def quantize(
    config: QuantConfig, source: Path, target: Path, calibration: Calibration | None, cache: Path | None = None,
    only: list[str] | None = None,
) -> None:  # fmt: skip
    """Write the int8 model for ``config`` (``only``: quantize just these nodes, for sensitivity)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    common: dict[str, Any] = {
        "per_channel": config.per_channel, "reduce_range": config.reduce_range, "weight_type": types[config.weight_type],
        "nodes_to_exclude": list(config.excluded), "nodes_to_quantize": only,
        # shape inference cannot type every tensor behind contrib ops (Attention, SkipLayerNormalization)
        "extra_options": {"DefaultTensorType": onnx.TensorProto.FLOAT},
    }  # fmt: skip
    if config.mode == "dynamic":
        registry = IntegerOpsRegistry
        common["op_types_to_quantize"] = [op for op in registry if op not in config.excluded_op_types]
        with quiet_onnxruntime():
            quantize_dynamic(str(source), str(target), **common)
        return
    registry = QDQRegistry if config.format == "QDQ" else QLinearOpsRegistry
    common["op_types_to_quantize"] = [op for op in registry if op not in config.excluded_op_types]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    names = [i.name for i in open_session(source).get_inputs()]
    try:
        with quiet_onnxruntime():
            quantize_static(
                str(source), str(target), calibration.reader(names, one_shape=config.calibration_method != "minmax"),
                quant_format=getattr(QuantFormat, config.format), activation_type=types[config.activation_type],
                calibrate_method=methods[config.calibration_method], calibration_cache_path=str(cache) if cache else None, **common,
            )  # fmt: skip
    except ValueError as exc:
        if config.calibration_method == "minmax":
            raise
        # ONNX Runtime's histogram collector calls np.histogram, which refuses a tensor whose values
        # span too narrow a range (relative to their size) for 2048 distinct bins
        raise CalibrationError(f"{config.calibration_method} calibration failed on this model: {exc}") from exc


class CalibrationError(StageError):
    """A histogram calibration method cannot calibrate this model; the search tries the next setting."""


def judge(path: Path, tokenizer, reference: Reference, max_length: int, batch_size: int, tolerance: float) -> dict:
    """Validation accuracy, agreement with fp32, batch-1 latency, and whether it is within tolerance."""
    session = open_session(path)
    predictions = predictions_of(onnx_logits(session, tokenizer, reference.rows, max_length, batch_size))
    validation = scores_of(reference.data, "validation", predictions)
    accuracy = score(validation)
    drop = (reference.accuracy - accuracy) / reference.accuracy if reference.accuracy else 0.0
    # collapsed: closer to always guessing the commonest label than to the fp32 model
    collapsed = accuracy - reference.chance < 0.5 * (reference.accuracy - reference.chance)
    return {
        "val_score": accuracy,
        "validation": validation,
        "relative_drop": drop,
        "agreement": agreement(predictions, reference.predictions),
        "latency_ms": batch1_latency_ms(session, tokenizer, reference.rows, max_length),
        "collapsed": bool(collapsed),
        "within_tolerance": bool(drop <= tolerance and not collapsed),
        "bytes": path.stat().st_size,
    }


def batch1_latency_ms(session, tokenizer, rows: dict[str, list], max_length: int, count: int = 24) -> float:
    """Median batch-1 latency over the first ``count`` texts after one warm-up: enough to order the
    trials of one stage (the bench stage measures properly)."""
    from edgepress.data.features import encode, text_slice

    count = min(count, len(rows["text"]))
    inputs = [feeds(session, encode(tokenizer, text_slice(rows, i, i + 1), max_length, return_tensors="np")) for i in range(count)]
    session.run(None, inputs[0])
    times = []
    for item in inputs:
        start = time.perf_counter()
        session.run(None, item)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)


def sensitivity(
    config: QuantConfig, source: Path, work: Path, tokenizer, reference: Reference, max_length: int,
    calibration: Calibration | None, cache: Path | None, sample: int = 32,
) -> list[tuple[str, float]]:  # fmt: skip
    """Nodes with weights (and, static, every MatMul), most sensitive first: mean |logit change| on
    ``sample`` validation texts when that node alone is quantized."""
    import onnx

    graph = onnx.load(str(source)).graph
    initializers = {i.name for i in graph.initializer}
    nodes = [
        n.name for n in graph.node
        if n.op_type in WEIGHTED_OPS and (config.mode == "static" or any(x in initializers for x in n.input))
    ]  # fmt: skip
    rows = {k: v[:sample] for k, v in reference.rows.items()}
    scores = []
    for name in nodes:
        quantize(config, source, work / "one.onnx", calibration, cache, only=[name])
        logits = onnx_logits(open_session(work / "one.onnx"), tokenizer, rows, max_length)
        # word logits (token classification) are as wide as the longest sentence given: NaN past a sentence's end
        expected = reference.logits[:sample, : logits.shape[1]] if logits.ndim == 3 else reference.logits[:sample]
        scores.append((name, float(np.nanmean(np.abs(logits - expected)))))
    return sorted(scores, key=lambda item: -item[1])
