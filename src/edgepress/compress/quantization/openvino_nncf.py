"""OpenVINO variants of the exported model (``quantize.backend: [openvino]``): IR, bf16 and NNCF int8.

The plain export (``model.onnx``) is converted to OpenVINO IR and checked against ONNX Runtime on
the validation split (``export.atol``); that fp32 IR is the reference every OpenVINO variant is
judged against, as the fp32 ONNX file is for ONNX Runtime's. int8 is NNCF's post-training
quantization (``nncf.quantize`` with ``ModelType.TRANSFORMER``: attention's matrix products and
the linear layers in int8, SmoothQuant and bias correction) calibrated on training texts at their
real lengths. When that misses ``quantize.tolerance`` and ``quantize.tune`` is on, NNCF's
``quantize_with_accuracy_control`` returns the most sensitive layers to floating point until the
validation score is back within it (relative drop, as the other backends count it). bf16 is not a
file: it is how OpenVINO runs the fp32 IR on CPUs with AMX or AVX-512 BF16; there it is scored like
a variant (``quantize.openvino_bf16``) so that bench can offer it within the same tolerance.

Everything goes to ``openvino/`` in the stage folder: ``openvino_model.xml`` (fp32),
``openvino_model_int8.xml``, config.json and the tokenizer, which ``openvino.Core().read_model``
opens alone and optimum-intel's ``OVModelFor...(file_name=...)`` opens where it is installed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepress.data.features import encode, text_slice
from edgepress.errors import ModelError, StageError
from edgepress.export import ir
from edgepress.export.runtime import onnx_logits, open_session, quiet_onnxruntime
from edgepress.metrics import agreement, predictions_of, score, score_name, scores_of
from edgepress.tasks import get_task

if TYPE_CHECKING:
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)

FOLDER = "openvino"


def variants(ctx: "StageContext", folder: Path, kept_files: tuple[str, ...], calibration: dict[str, list]) -> dict[str, dict[str, Any]]:
    """``{"openvino-int8": ..., "openvino-bf16": ...}`` (bf16 where this CPU has it), written to ``openvino/``;
    ``calibration``: the training texts (``text``, optional ``text_pair``) that calibrate int8."""
    from transformers import AutoTokenizer

    cfg = ctx.recipe.quantize
    ir.openvino()
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise ModelError(f"NNCF is not installed; {ir.INSTALL}") from None
    source = folder / "model.onnx"
    if not source.is_file():
        raise ModelError(f"{folder} has no model.onnx; the OpenVINO backend converts the plain export (run the export stage first)")
    out = ctx.out_dir / FOLDER
    out.mkdir(exist_ok=True)
    for name in kept_files:
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fp32 = ir.convert(source)
    ir.save(fp32, out / ir.FP32_NAME)
    judge = Judge(ctx, tokenizer, ir.compile_ir(fp32, "f32"))
    judge.check_parity(open_session(source), ctx.recipe.export.atol)
    found = {}
    if cfg.openvino_bf16 and "bf16" in ir.available_precisions():
        found["openvino-bf16"] = _bf16(judge, fp32, out)
    found["openvino-int8"] = _int8(ctx, judge, fp32, out, calibration)
    for name, variant in found.items():
        log.info("%s kept (%s): test %s %.2f%%, agrees with fp32 on %.1f%% of test", name, variant["described"],
                 score_name(variant["test"]), 100 * score(variant["test"]), 100 * variant["test_agreement_with_fp32"])  # fmt: skip
    return found


class Judge:
    """Scores compiled models on validation and test against the fp32 IR's own predictions."""

    def __init__(self, ctx: "StageContext", tokenizer: Any, fp32: Any):
        cfg = ctx.recipe.quantize
        self.data, self.tokenizer, self.tolerance = ctx.data, tokenizer, cfg.tolerance
        self.max_length, self.batch = cfg.max_seq_length, cfg.scoring_batch_size
        self.rows = {"validation": ctx.data.validation.to_dict(), "test": ctx.data.test.to_dict()}
        self.fp32_logits = self.logits(fp32, "validation")
        self.fp32 = {split: predictions_of(self.fp32_logits if split == "validation" else self.logits(fp32, split)) for split in self.rows}
        self.reference = scores_of(self.data, "validation", self.fp32["validation"])

    def logits(self, compiled: Any, split: str) -> np.ndarray:
        return ir.ir_logits(compiled, self.tokenizer, self.rows[split], self.max_length, self.batch)

    def check_parity(self, session: Any, atol: float) -> None:
        """The IR must compute what the ONNX file computes (word logits past a sentence's end are NaN)."""
        onnx = onnx_logits(session, self.tokenizer, self.rows["validation"], self.max_length, self.batch)
        diff = float(np.nanmax(np.abs(onnx - self.fp32_logits)))
        if diff > atol:
            raise StageError(
                f"OpenVINO's fp32 IR differs from the ONNX model by {diff:.2e} in validation logits (export.atol is {atol:g}); "
                "this is a converter problem: report it with the model, or leave openvino out of quantize.backend"
            )

    def validation(self, compiled: Any) -> dict[str, Any]:
        predictions = predictions_of(self.logits(compiled, "validation"))
        scores = scores_of(self.data, "validation", predictions)
        base = score(self.reference)
        drop = (base - score(scores)) / base if base else 0.0
        return {"validation": scores, "val_score": score(scores), "relative_drop": drop,
                "agreement": agreement(predictions, self.fp32["validation"]), "within_tolerance": bool(drop <= self.tolerance)}  # fmt: skip

    def describe(self, compiled: Any, kept: dict[str, Any]) -> dict[str, Any]:
        test = predictions_of(self.logits(compiled, "test"))
        return {
            "backend": "openvino", "folder": FOLDER, "precision": ir.precision_of(compiled),
            "validation": kept["validation"], "validation_agreement_with_fp32": kept["agreement"],
            "fp32_validation": self.reference, "test": scores_of(self.data, "test", test),
            "fp32_test": scores_of(self.data, "test", self.fp32["test"]), "test_agreement_with_fp32": agreement(test, self.fp32["test"]),
        }  # fmt: skip

    def failure(self, what: str, tried: list[dict[str, Any]], hint: str) -> StageError:
        name = score_name(self.reference)
        scores = "; ".join(f"{t['method']}: {100 * t['val_score']:.2f}%" for t in tried)
        return StageError(
            f"{what} did not keep validation {name} within {100 * self.tolerance:g}% (relative) of the fp32 IR's "
            f"{100 * score(self.reference):.2f}% ({scores}); {hint}"
        )


def _bf16(judge: Judge, fp32: Any, out: Path) -> dict[str, Any]:
    compiled = ir.compile_ir(fp32, "bf16")
    kept = {"method": "bf16 inference", **judge.validation(compiled)}
    if not kept["within_tolerance"]:
        raise judge.failure("OpenVINO's bf16 inference", [kept], "set quantize.openvino_bf16: false to leave bf16 out, or raise quantize.tolerance")
    path = out / ir.FP32_NAME
    return {**judge.describe(compiled, kept), "file": f"{FOLDER}/{ir.FP32_NAME}", "described": "fp32 IR run in bf16",
            "bytes": ir.file_bytes(path), "size_ratio": 1.0, "trials": [kept]}  # fmt: skip


def _int8(ctx: "StageContext", judge: Judge, fp32: Any, out: Path, texts: dict[str, list]) -> dict[str, Any]:
    import nncf

    cfg = ctx.recipe.quantize
    calibration = nncf.Dataset(_calibration_items(texts, judge.tokenizer, [port.any_name for port in fp32.inputs], cfg.max_seq_length))
    common = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": cfg.calibration_samples, "target_device": nncf.TargetDevice.CPU}
    with _quiet_nncf():
        quantized = nncf.quantize(fp32, calibration, **common)
    tried = [{"method": "nncf.quantize", **judge.validation(ir.compile_ir(quantized, "f32"))}]
    if not tried[-1]["within_tolerance"] and cfg.tune:
        quantized = _with_accuracy_control(judge, fp32, calibration, common)
        tried.append({"method": "nncf.quantize_with_accuracy_control", **judge.validation(ir.compile_ir(quantized, "f32"))})
    if not tried[-1]["within_tolerance"]:
        hint = "raise quantize.tolerance" + ("" if cfg.tune else ", or turn on quantize.tune (NNCF's accuracy control)")
        raise judge.failure("OpenVINO int8 (NNCF)", tried, hint + ", or leave openvino out of quantize.backend")
    path = out / ir.INT8_NAME
    ir.save(quantized, path)
    compiled = ir.compile_ir(path, "f32")  # the file as a user opens it, not the object in memory
    ops = ir.op_counts(quantized)
    return {
        **judge.describe(compiled, tried[-1]), "file": f"{FOLDER}/{ir.INT8_NAME}",
        "described": f"{tried[-1]['method']}, {ops.get('FakeQuantize', 0)} int8 points",
        "bytes": ir.file_bytes(path), "size_ratio": round(ir.file_bytes(path) / ir.file_bytes(out / ir.FP32_NAME), 4),
        "quantized_ops": {"FakeQuantize": ops.get("FakeQuantize", 0)}, "trials": tried,
    }  # fmt: skip


def _with_accuracy_control(judge: Judge, fp32: Any, calibration: Any, common: dict[str, Any]) -> Any:
    """NNCF's accuracy-aware quantization; its validation items are row indices, scored by the task's metric."""
    import nncf

    rows = judge.rows["validation"]
    labels = judge.data.validation["label"]

    def validate(compiled: Any, indices: Any) -> float:
        chosen = list(indices)
        subset = {k: [v[i] for i in chosen] for k, v in rows.items() if k in ("text", "text_pair")}
        predictions = predictions_of(ir.ir_logits(compiled, judge.tokenizer, subset, judge.max_length, judge.batch))
        return score(get_task(judge.data.task).scores([labels[i] for i in chosen], predictions, judge.data.labels, judge.data.strict_entities))

    log.info("OpenVINO int8 missed the tolerance; NNCF's accuracy control returns sensitive layers to floating point")
    with _quiet_nncf():
        return nncf.quantize_with_accuracy_control(
            fp32, calibration, nncf.Dataset(list(range(len(rows["text"])))), validate,
            max_drop=judge.tolerance, drop_type=nncf.DropType.RELATIVE, **common,
        )  # fmt: skip


def _calibration_items(texts: dict[str, list], tokenizer: Any, names: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """One training text per item at its real length: the ranges are those of words, not of padding."""
    items = []
    for i in range(len(texts["text"])):
        encoded = encode(tokenizer, text_slice(texts, i, i + 1), max_length, return_tensors="np")
        items.append({n: np.asarray(encoded[n], dtype=np.int64) for n in names})
    return items


def _quiet_nncf():
    """NNCF logs each step and draws progress bars on stdout; keep them for --debug."""
    import nncf

    if not logging.getLogger("edgepress").isEnabledFor(logging.DEBUG):
        nncf.set_log_level(logging.WARNING)
    return quiet_onnxruntime()
