"""The queries, keys and values of one encoder layer, for MiniLMv2's relation distillation.

Transformers returns hidden states and attention probabilities, but not a layer's queries, keys
and values; forward hooks on the three projections keep their outputs. The student's last layer
learns the relations of one teacher layer (losses.relation_kl), which is why only one layer is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgepress.errors import RecipeError
from edgepress.models import encoder_parts

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgepress.recipe.training import DistillLossSection

KINDS = ("query", "key", "value")
# what the projections are called in BERT and RoBERTa, DistilBERT, and models with *_proj names
NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q_proj", "k_proj", "v_proj"))


def projections(layer: "nn.Module") -> list["nn.Module"]:
    """The query, key and value projections of an encoder layer."""
    by_name = {name.rsplit(".", 1)[-1]: module for name, module in layer.named_modules()}
    for names in NAMES:
        if all(n in by_name for n in names):
            return [by_name[n] for n in names]
    raise RecipeError(
        f"cannot find the query, key and value projections of {type(layer).__name__} (looked for {', '.join('/'.join(n) for n in NAMES)}); "
        "relation distillation supports BERT-like encoders: set distill.loss.relation_weight to 0"
    )


def layer_of(model: "nn.Module", index: int) -> "nn.Module":
    """Encoder layer ``index`` of a classifier (negative: from the end)."""
    return encoder_parts(model)[1][index]


def teacher_layer(loss: "DistillLossSection", teacher: "nn.Module") -> int:
    """The teacher layer whose relations the student's last layer learns (default: the last), once
    checked: it exists, and the relation heads divide its width."""
    depth = len(encoder_parts(teacher)[1])
    layer = depth - 1 if loss.relation_layer is None else loss.relation_layer
    if layer >= depth:
        raise RecipeError(f"distill.loss.relation_layer is {layer} but the teacher has {depth} layers (0-{depth - 1}); give one of those")
    check_heads(loss.relation_heads, layer_of(teacher, layer), "teacher")
    return layer


def check(loss: "DistillLossSection", teacher: "nn.Module", student: "nn.Module") -> None:
    """Before any teacher pass: the relation layer exists and the relation heads divide both widths."""
    teacher_layer(loss, teacher)
    check_heads(loss.relation_heads, layer_of(student, -1), "student")


def check_heads(heads: int, layer: "nn.Module", whose: str) -> None:
    """Relation heads split each projection's output evenly: refuse a width they do not divide."""
    for kind, module in zip(KINDS, projections(layer)):
        width = module.out_features
        if width % heads:
            raise RecipeError(
                f"distill.loss.relation_heads is {heads}, which does not divide the {whose}'s {width}-wide {kind} vectors; "
                f"choose a divisor of both models' widths (e.g. {_common_hint(width, heads)})"
            )


def _common_hint(width: int, heads: int) -> int:
    """The largest divisor of ``width`` not above ``heads``."""
    return max(d for d in range(1, heads + 1) if width % d == 0)


class Capture:
    """Forward hooks that keep the latest outputs of one layer's query, key and value projections."""

    def __init__(self, layer: "nn.Module"):
        self.outputs: dict[str, "torch.Tensor"] = {}
        self.handles = [module.register_forward_hook(self._keep(kind)) for kind, module in zip(KINDS, projections(layer))]

    def _keep(self, kind: str):
        def hook(module, args, output) -> None:
            self.outputs[kind] = output

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()
