"""OpenVINO IR: the exported ONNX graph converted for OpenVINO's runtime, compiled and evaluated.

OpenVINO reads the plain graph (``model.onnx``): ONNX Runtime's contrib operators in the fused and
int8 files (``com.microsoft`` Attention, QAttention, SkipLayerNormalization) have no conversion
rule, and OpenVINO fuses attention and normalization itself when it compiles. Files are written as
``openvino_model*.xml`` + ``.bin`` beside config.json and the tokenizer, the layout optimum-intel's
``OVModelFor...`` opens.

Precision: OpenVINO's CPU plugin switches to bf16 on its own on CPUs that have it (AMX, AVX-512
BF16). edgepress always names the precision it asks for (``INFERENCE_PRECISION_HINT``) and records
the one the compiled model reports, so an "f32" result is f32 on every CPU and bf16 is a result of
its own, scored and timed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepress.errors import ModelError
from edgepress.export.runtime import batched_logits

if TYPE_CHECKING:
    import openvino as ov
    from transformers import PreTrainedTokenizerBase

FP32_NAME, INT8_NAME = "openvino_model.xml", "openvino_model_int8.xml"
INSTALL = "pip install 'edgepress[openvino]' (openvino and nncf)"
PRECISIONS = {"FP32": "f32", "BF16": "bf16", "FP16": "f16"}


def openvino() -> Any:
    """The ``openvino`` module, or one error that says how to install it."""
    try:
        import openvino as ov
    except ImportError:
        raise ModelError(f"OpenVINO is not installed; {INSTALL}") from None
    return ov


def convert(onnx_path: Path) -> "ov.Model":
    """``model.onnx`` as an OpenVINO model; its dynamic batch and sequence axes stay dynamic."""
    try:
        return openvino().convert_model(str(onnx_path))
    except Exception as exc:  # the frontend raises its own types for operators it cannot read
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"OpenVINO cannot convert {onnx_path} ({first[:300]}); convert the plain export (model.onnx), not a fused or int8 file") from None


def save(model: "ov.Model", path: Path) -> None:
    """An ``.xml`` + ``.bin`` pair, weights as they are (OpenVINO's default would halve fp32 weights to fp16)."""
    openvino().save_model(model, str(path), compress_to_fp16=False)


def read(path: Path) -> "ov.Model":
    ov = openvino()
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ModelError(f"OpenVINO IR {path} (and its .bin) does not exist; run the quantize stage with quantize.backend: [openvino]")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot read {path} ({str(exc).strip()[:200]}); write it again with the quantize stage") from None


def available_precisions() -> list[str]:
    """Inference precisions this CPU runs natively: f32 always, bf16 with AMX or AVX-512 BF16."""
    capabilities = openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["f32"] + (["bf16"] if "BF16" in capabilities else [])


def compile_ir(model: "ov.Model | Path", precision: str = "f32", threads: int | None = None) -> Any:
    """A CompiledModel for this CPU at ``precision`` (f32 or bf16), tuned for latency (one stream)."""
    ov = openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    source = read(model) if isinstance(model, Path) else model
    return ov.Core().compile_model(source, "CPU", config)


def precision_of(compiled: Any) -> str:
    """The precision the compiled model really runs its floating-point math in."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type: to_string() is "f32", "bf16", ...
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


def feeds(compiled: Any, encoded: dict) -> dict[str, np.ndarray]:
    names = [port.any_name for port in compiled.inputs]
    missing = [n for n in names if n not in encoded]
    if missing:
        raise ModelError(f"the OpenVINO model wants inputs {', '.join(missing)} that the tokenizer does not produce")
    return {n: np.asarray(encoded[n], dtype=np.int64) for n in names}


def run(compiled: Any, encoded: dict) -> np.ndarray:
    return compiled(feeds(compiled, encoded))[compiled.output(0)]


def ir_logits(compiled: Any, tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits of a compiled IR for ``rows``, in the shape ``onnx_logits`` gives."""
    return batched_logits(lambda encoded: run(compiled, encoded), tokenizer, rows, max_length, batch_size)


def op_counts(model: "ov.Model") -> dict[str, int]:
    """Operations per type, most common first (``FakeQuantize`` marks NNCF's int8 points)."""
    return dict(Counter(op.get_type_name() for op in model.get_ops()).most_common())


def parameter_count(path: Path) -> int:
    """Elements of the IR's weight tensors (constants of two or more dimensions)."""
    model = read(path)
    return sum(int(np.prod(op.get_output_shape(0))) for op in model.get_ops() if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) >= 2)


def file_bytes(path: Path) -> int:
    return path.stat().st_size + path.with_suffix(".bin").stat().st_size
