"""Graph fusion: attention, LayerNorm, GELU and bias ops into ONNX Runtime's contrib operators.

Which library: ONNX Runtime's transformer optimizer matches the attention pattern of TorchScript
exports (and optimum's), but fuses no attention in a graph from the dynamo exporter
(``torch.onnx.export(dynamo=True)``); onnxscript's ``optimize_for_ort`` fuses attention,
SkipLayerNormalization and BiasGelu in those graphs into the same contrib operators.

One rewrite is edgepress's own (:func:`attention_mask_index`), because neither library does it:
onnxscript's fused ``Attention`` takes the padding mask as an additive float bias and carries a
``qkv_hidden_sizes`` attribute, and ONNX Runtime's int8 quantizer turns neither form into
``QAttention``, so the attention's projections stayed fp32 in every int8 file."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from edgepress.export.runtime import quiet_onnxruntime

if TYPE_CHECKING:
    import onnx_ir as ir

log = logging.getLogger(__name__)

ATTENTION_OPS = ("Attention", "MultiHeadAttention")
# The transformer optimizer's BERT fusions cover the BERT family (RoBERTa, DistilBERT, ELECTRA, MiniLM, ...).
OPTIMIZER_MODEL_TYPES = {"bart": "bart", "gpt2": "gpt2", "t5": "t5", "vit": "vit", "swin": "swin"}
FUSED_OPS = (
    "Attention", "MultiHeadAttention", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
    "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "BiasSplitGelu", "RotaryEmbedding",
)  # fmt: skip
DYNAMO = "torch"  # the exporter name of torch.onnx.export(dynamo=True) in the recipe
MASK_INPUT = "attention_mask"


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
    rewritten = attention_mask_index(model)
    _fold_attention_weights(model)
    ir.save(model, str(target))
    ops = Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    return {
        "fusion": "onnxscript.rewriter.ort_fusions",
        "fused_ops": {op: ops[op] for op in FUSED_OPS if ops.get(op)},
        "attention_mask_index": rewritten,
    }


def attention_mask_index(model: "ir.Model") -> int:
    """Give each fused ``Attention`` the raw padding mask (``mask_index``, int32, batch x sequence)
    instead of the float bias built from it, and drop ``qkv_hidden_sizes`` where the three sizes
    are equal: the form ONNX Runtime's quantizer turns into ``QAttention``. Returns the nodes
    rewritten. Only a bias computed from the ``attention_mask`` input alone is replaced (a relative
    position bias or any learned term is kept as it is); the export stage's parity check on padded
    batches runs on the result, so a mask read wrongly fails the stage."""
    import onnx_ir as ir

    mask = next((v for v in model.graph.inputs if v.name == MASK_INPUT), None)
    nodes = [n for n in model.graph if n.op_type == "Attention" and n.domain == "com.microsoft" and _rewritable(n, mask)]
    if not nodes:
        return 0
    cast = ir.node("Cast", [mask], attributes={"to": ir.DataType.INT32}, name="edgepress_mask_index")
    cast.outputs[0].name = "edgepress_mask_index"
    model.graph.insert_before(nodes[0], cast)
    for node in nodes:
        node.attributes.pop("qkv_hidden_sizes", None)
        node.resize_inputs(4)
        node.replace_input_with(3, cast.outputs[0])
    ir.passes.common.RemoveUnusedNodesPass()(model)
    return len(nodes)


def _fold_attention_weights(model: "ir.Model") -> None:
    """Fold the ``Concat`` of the query, key and value weights (and biases) that the fused
    ``Attention`` reads into one initializer. onnxscript leaves it unfolded when each part is above
    its constant-folding size limit (a 128-wide model already is), and ONNX Runtime's quantizer then
    keeps the parts in fp32 beside their int8 copy."""
    import onnx_ir as ir
    from onnxscript.optimizer import fold_constants

    weights = {
        id(value.producer())
        for node in model.graph
        if node.op_type == "Attention"
        for value in node.inputs[1:3]
        if value is not None and value.producer() is not None and value.producer().op_type == "Concat"
    }
    fold_constants(model, should_fold=lambda node: True if id(node) in weights else None)
    ir.passes.common.RemoveUnusedNodesPass()(model)


def _rewritable(node: "ir.Node", mask: "ir.Value | None") -> bool:
    sizes = node.attributes.get("qkv_hidden_sizes")
    if sizes is not None and len(set(sizes.as_ints())) != 1:
        return False
    if node.attributes.get("unidirectional") is not None and node.attributes["unidirectional"].as_int():
        return False
    inputs = list(node.inputs) + [None] * (7 - len(node.inputs))
    if mask is None or any(inputs[i] is not None for i in (3, 4, 6)) or inputs[5] is None:
        return False
    return _sources(inputs[5]) == {mask.name}


def _sources(value: "ir.Value") -> set[str]:
    """The graph inputs ``value`` is computed from; a non-scalar float initializer counts as a source
    (it is a learned term, not part of a padding mask). What reaches ``value`` only through a
    ``Shape`` (the batch and sequence sizes of any input) does not count."""
    found, stack, seen = set(), [value], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.is_graph_input():
            found.add(current.name)
        elif current.is_initializer() and current.dtype is not None and current.dtype.is_floating_point():
            if current.const_value is not None and current.const_value.size > 1:
                found.add(current.name)
        producer = current.producer()
        if producer is not None and producer.op_type not in ("Shape", "Size"):
            stack.extend(producer.inputs)
    return found


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
