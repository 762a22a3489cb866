"""Where each family of encoders keeps the parts that pruning cuts, and how heads are cut.

Heads are the one cut that loading must replay: Transformers 5 has no ``prune_heads`` and its
config holds one head count for all layers, so a model whose layers keep different numbers of
heads is described by ``config.pruned_heads`` (the original head numbers removed per layer, as
Transformers 4 recorded them) and rebuilt by ``replay_heads`` before its weights are loaded
(``models.from_pretrained``). The attention modules reshape with ``-1`` heads and a fixed head
size, so a sliced layer needs no other change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgepress.errors import ModelError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Layout:
    """Where a family of encoders keeps the parts that pruning cuts, as attribute paths."""

    layers: str  # the encoder's ModuleList, from the base model
    attention: str  # the module that holds the query, key and value projections, from a layer
    projections: tuple[str, str, str]  # query, key, value Linears, from ``attention``
    attention_output: str  # the Linear that reads the concatenated heads, from a layer
    ffn_in: str
    ffn_out: str
    num_heads: str  # the attention's head counter, from a layer (updated when heads go)
    depth_key: str  # config keys
    heads_key: str
    ffn_key: str


BERT = Layout(
    "encoder.layer", "attention.self", ("query", "key", "value"), "attention.output.dense", "intermediate.dense", "output.dense",
    "attention.self.num_attention_heads", "num_hidden_layers", "num_attention_heads", "intermediate_size",
)  # fmt: skip
DISTILBERT = Layout(
    "transformer.layer", "attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin", "ffn.lin1", "ffn.lin2",
    "attention.n_heads", "n_layers", "n_heads", "hidden_dim",
)  # fmt: skip
# BERT's layout is shared by the encoders derived from it
LAYOUTS = {"bert": BERT, "roberta": BERT, "xlm-roberta": BERT, "electra": BERT, "camembert": BERT, "distilbert": DISTILBERT}


def get_path(root: object, path: str) -> object:
    """``root.a.b`` for ``path = 'a.b'``."""
    for name in path.split("."):
        root = getattr(root, name)
    return root


def layout_of(model: "PreTrainedModel") -> Layout:
    layout = LAYOUTS.get(model.config.model_type)
    if layout is None:
        raise ModelError(
            f"structured pruning supports {', '.join(sorted(LAYOUTS))} encoders, not {model.config.model_type!r}; "
            "distill into one of those first (distill.student), or skip the prune stage"
        )
    return layout


@dataclass
class LayerView:
    """One encoder layer's prunable parts."""

    module: "nn.Module"
    layout: Layout

    def part(self, name: str) -> "nn.Module":
        return get_path(self.module, getattr(self.layout, name))

    @property
    def num_heads(self) -> int:
        return int(get_path(self.module, self.layout.num_heads))

    @property
    def head_size(self) -> int:
        return self.part("attention_output").in_features // self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.part("ffn_in").out_features


def layers(model: "PreTrainedModel") -> list[LayerView]:
    layout = layout_of(model)
    return [LayerView(module, layout) for module in get_path(model.base_model, layout.layers)]


def original_heads(model: "PreTrainedModel", layer: int) -> list[int]:
    """The original head numbers that layer ``layer`` still has, in the order of its weights.
    ``prune_heads`` takes original numbers, the weights hold the remaining heads in order."""
    total = getattr(model.config, layout_of(model).heads_key)
    gone = set(pruned_heads(model.config).get(layer, ()))
    return [h for h in range(total) if h not in gone]


def pruned_heads(config: object) -> dict[int, list[int]]:
    """``config.pruned_heads`` with integer layer keys (JSON gives strings), {} when absent."""
    return {int(k): list(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}


def slice_heads(view: "LayerView", positions: list[int]) -> None:
    """Cut the heads at ``positions`` out of one layer: rows of the query, key and value
    projections, columns of the output projection (``prune_linear_layer`` keeps the rest in order)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    if len(positions) >= view.num_heads:
        raise ValueError(f"all {view.num_heads} heads of a layer would be removed; keep at least one")
    size = view.head_size
    keep = torch.tensor([h * size + i for h in range(view.num_heads) if h not in positions for i in range(size)], dtype=torch.long)
    attention = view.part("attention")
    for name in view.layout.projections:
        setattr(attention, name, prune_linear_layer(getattr(attention, name), keep, dim=0))
    set_path(view.module, view.layout.attention_output, prune_linear_layer(view.part("attention_output"), keep, dim=1))
    heads = view.num_heads - len(positions)
    set_path(view.module, view.layout.num_heads, heads)
    # the width of the concatenated heads, which Transformers 4's attention reshapes by
    if hasattr(attention, "all_head_size"):  # BERT
        attention.all_head_size = heads * size
    if view.layout is DISTILBERT:
        attention.dim = heads * size


def replay_heads(model: "PreTrainedModel") -> None:
    """Cut the heads ``config.pruned_heads`` names from a model built from its config (unpruned),
    so that a head-pruned artifact's weights fit it."""
    for layer, heads in pruned_heads(model.config).items():
        slice_heads(layers(model)[layer], heads)


def set_path(root: "nn.Module", path: str, value: object) -> None:
    owner, _, attr = path.rpartition(".")
    setattr(get_path(root, owner) if owner else root, attr, value)
