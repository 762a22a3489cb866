"""The variants made from the exported graph: fused (ONNX Runtime's transformer optimizer), fp16,
and the ORT mobile format. All three are ONNX Runtime's own tools; edgepress only chooses their
settings and records what they did."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgepress.errors import StageError
from edgepress.export.runtime import quiet_onnxruntime

if TYPE_CHECKING:
    from onnxruntime.transformers.onnx_model import OnnxModel

log = logging.getLogger(__name__)

ATTENTION_OPS = ("Attention", "MultiHeadAttention")
# The transformer optimizer's BERT fusions cover the BERT family (RoBERTa, DistilBERT, ELECTRA, MiniLM, ...).
OPTIMIZER_MODEL_TYPES = {"bart": "bart", "gpt2": "gpt2", "t5": "t5", "vit": "vit", "swin": "swin"}


def optimize_graph(source: Path, target: Path, model_type: str, num_layers: int) -> tuple[dict, "OnnxModel"]:
    """Fuse attention, LayerNorm, GELU and bias ops into ``target``; return the fused-op counts.

    Head count and width are detected per attention node (``num_heads=0``), so that layers with
    different head counts after pruning fuse too. ``opt_level=1`` applies only ONNX Runtime's basic,
    hardware-independent rewrites, so the file stays portable (to ARM, to GPU)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    kind = OPTIMIZER_MODEL_TYPES.get(model_type, "bert")
    with quiet_onnxruntime():
        optimized = optimize_model(
            str(source), model_type=kind, num_heads=0, hidden_size=0,
            optimization_options=FusionOptions(kind), opt_level=1, use_gpu=False,
        )  # fmt: skip
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(target))
    attention = sum(fused.get(op, 0) for op in ATTENTION_OPS)
    stats = {"optimizer_model_type": kind, "fused_ops": fused, "attention_fused_layers": attention, "layers": num_layers}
    if attention < num_layers:
        log.warning(
            "attention was fused in %d of %d layers: ONNX Runtime will run the unfused ops there, slower. "
            "Export with eager attention (the default here) and a supported architecture to get it fused.",
            attention,
            num_layers,
        )
    return stats, optimized


def write_fp16(optimized: "OnnxModel", target: Path) -> None:
    """fp16 weights and math with fp32 inputs and outputs (``keep_io_types``), for GPU targets.

    Ops that are unstable in fp16 (LayerNorm statistics, Softmax sums) are kept fp32 by ONNX Runtime's
    converter; on CPU, ONNX Runtime inserts casts where it has no fp16 kernel, so it still runs."""
    with quiet_onnxruntime():
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(target))


def write_ort_format(source: Path, folder: Path) -> list[Path]:
    """``<name>.ort`` and ``<name>.required_operators.config`` next to ``source``, with ONNX Runtime's
    conversion tool. The config is what a reduced-size (mobile) ONNX Runtime build is compiled against.
    Target ``arm`` keeps x86-only layout rewrites out of the file, so it runs on phones and boards."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        work = Path(scratch)
        shutil.copy(source, work / source.name)
        try:
            with quiet_onnxruntime():
                convert_onnx_models_to_ort(
                    work / source.name, output_dir=work / "out",
                    optimization_styles=[OptimizationStyle.Fixed], target_platform="arm",
                )  # fmt: skip
        except Exception as exc:
            raise StageError(
                f"ONNX Runtime could not convert {source.name} to the ORT mobile format ({exc}); set export.mobile: false to skip it"
            ) from exc
        written = []
        for produced in sorted((work / "out").iterdir()):
            shutil.move(str(produced), folder / produced.name)
            written.append(folder / produced.name)
    return written
