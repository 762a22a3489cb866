"""The variants made from the exported graph: fused, fp16, and the ORT mobile format. Each is a
library's own tool (onnxscript's ORT fusions or ONNX Runtime's transformer optimizer, ONNX
Runtime's fp16 converter and ORT-format tool); edgepress only chooses their settings and records
what they did.

Which fusion: ONNX Runtime's transformer optimizer matches the attention pattern of TorchScript
exports (and optimum's), but fuses no attention in a graph from the dynamo exporter
(``torch.onnx.export(dynamo=True)``); onnxscript's ``optimize_for_ort`` fuses attention,
SkipLayerNormalization and BiasGelu in those graphs into the same ONNX Runtime contrib operators."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from edgepress.errors import StageError
from edgepress.export.runtime import quiet_onnxruntime

log = logging.getLogger(__name__)

ATTENTION_OPS = ("Attention", "MultiHeadAttention")
# The transformer optimizer's BERT fusions cover the BERT family (RoBERTa, DistilBERT, ELECTRA, MiniLM, ...).
OPTIMIZER_MODEL_TYPES = {"bart": "bart", "gpt2": "gpt2", "t5": "t5", "vit": "vit", "swin": "swin"}


FUSED_OPS = (
    "Attention", "MultiHeadAttention", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
    "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "BiasSplitGelu", "RotaryEmbedding",
)  # fmt: skip
DYNAMO = "torch"  # the exporter name of torch.onnx.export(dynamo=True) in the recipe


def optimize_graph(source: Path, target: Path, model_type: str, num_layers: int, exporter: str = DYNAMO) -> dict:
    """Fuse attention, LayerNorm, GELU and bias ops into ``target``; return the fused-op counts.
    A dynamo export is fused by onnxscript, a TorchScript or optimum export by ONNX Runtime (see above)."""
    if exporter == DYNAMO:
        stats = _fuse_onnxscript(source, target)
    else:
        stats = _fuse_onnxruntime(source, target, model_type)
    attention = sum(stats["fused_ops"].get(op, 0) for op in ATTENTION_OPS)
    stats.update(attention_fused_layers=attention, layers=num_layers)
    if attention < num_layers:
        log.warning(
            "attention was fused in %d of %d layers: ONNX Runtime will run the unfused ops there, slower. "
            "Export with eager attention (the default here) and a supported architecture to get it fused.",
            attention,
            num_layers,
        )
    return stats


def _fuse_onnxscript(source: Path, target: Path) -> dict:
    import onnx
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.load(str(source)))
    ir.save(model, str(target))
    ops = Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    return {"fusion": "onnxscript.rewriter.ort_fusions", "fused_ops": {op: ops[op] for op in FUSED_OPS if ops.get(op)}}


def _fuse_onnxruntime(source: Path, target: Path, model_type: str) -> dict:
    """Head count and width are detected per attention node (``num_heads=0``), so that layers with
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
    return {"fusion": "onnxruntime.transformers.optimizer", "optimizer_model_type": kind, "fused_ops": fused}


def write_fp16(source: Path, target: Path) -> None:
    """fp16 weights and math with fp32 inputs and outputs (``keep_io_types``), for GPU targets.

    Ops that are unstable in fp16 (LayerNorm statistics, Softmax sums) are kept fp32 by ONNX Runtime's
    converter; on CPU, ONNX Runtime inserts casts where it has no fp16 kernel, so it still runs."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    optimized = OnnxModel(onnx.load(str(source)))
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
