"""Physical removal of attention heads, FFN neurons and encoder layers, and the size they leave.

Heads are cut by ``encoders.slice_heads`` and recorded in ``config.pruned_heads`` (the original
head numbers per layer), which loading replays (see encoders.py). Nothing in Transformers removes
FFN neurons or layers:
neurons are removed with its ``prune_linear_layer`` (rows of the up-projection, columns of the
down-projection), and the config's single ``intermediate_size`` is why every layer must keep the
same number of them. Layers are removed from the encoder's module list and the config's depth.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from edgepress.encoders import LayerView, get_path, layers, layout_of, original_heads, pruned_heads, set_path, slice_heads

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel


def remove_heads(model: "PreTrainedModel", positions: dict[int, list[int]]) -> None:
    """Remove heads given by their current position in each layer, and record their original
    numbers in ``config.pruned_heads``."""
    record = pruned_heads(model.config)
    views = layers(model)
    for layer, where in positions.items():
        if not where:
            continue
        remaining = original_heads(model, layer)
        record[layer] = sorted(set(record.get(layer, [])) | {remaining[p] for p in where})
        slice_heads(views[layer], sorted(set(where)))
    model.config.pruned_heads = {k: v for k, v in sorted(record.items()) if v}


def remove_neurons(model: "PreTrainedModel", positions: dict[int, list[int]]) -> None:
    """Remove FFN neurons by position; every layer must end with the same FFN size (see the module doc)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    views = layers(model)
    sizes = {view.ffn_size - len(set(positions.get(i, ()))) for i, view in enumerate(views)}
    if len(sizes) != 1:
        raise ValueError(f"FFN sizes would differ across layers ({sorted(sizes)}); the config holds one size")
    for i, view in enumerate(views):
        gone = set(positions.get(i, ()))
        if not gone:
            continue
        keep = torch.tensor([n for n in range(view.ffn_size) if n not in gone], dtype=torch.long)
        set_path(view.module, view.layout.ffn_in, prune_linear_layer(view.part("ffn_in"), keep, dim=0))
        set_path(view.module, view.layout.ffn_out, prune_linear_layer(view.part("ffn_out"), keep, dim=1))
    setattr(model.config, layout_of(model).ffn_key, sizes.pop())


def drop_layers(model: "PreTrainedModel", drop: list[int]) -> list[int]:
    """Remove whole encoder layers; returns the kept layers' old indices. ``pruned_heads`` is re-keyed."""
    from torch import nn

    views = layers(model)
    kept = [i for i in range(len(views)) if i not in set(drop)]
    if not kept:
        raise ValueError("every layer would be removed; keep at least one")
    owner, attr = _layer_list(model)
    setattr(owner, attr, nn.ModuleList(views[i].module for i in kept))
    setattr(model.config, layout_of(model).depth_key, len(kept))
    old = pruned_heads(model.config)
    model.config.pruned_heads = {new: old[i] for new, i in enumerate(kept) if old.get(i)}
    return kept


@contextlib.contextmanager
def skipping(model: "PreTrainedModel", skip: int) -> Iterator[None]:
    """Run the model without layer ``skip`` inside the block (the encoders loop over their layer list)."""
    from torch import nn

    owner, attr = _layer_list(model)
    full = getattr(owner, attr)
    setattr(owner, attr, nn.ModuleList(m for i, m in enumerate(full) if i != skip))
    try:
        yield
    finally:
        setattr(owner, attr, full)


def _layer_list(model: "PreTrainedModel") -> tuple["nn.Module", str]:
    owner, _, attr = layout_of(model).layers.rpartition(".")
    return get_path(model.base_model, owner), attr




# --------------------------------------------------------------------------- size


def head_cost(view: LayerView, metric: str, seq_length: int) -> int:
    """Parameters or FLOPs per token one head of this layer costs: its slices of the query, key and
    value matrices and biases and of the output matrix; per token, those products plus its share of
    the attention scores and weighted sum over ``seq_length`` positions (2 FLOPs a multiply-add)."""
    hidden, size = view.part("attention_output").out_features, view.head_size
    if metric == "params":
        return 4 * hidden * size + 3 * size
    return 8 * hidden * size + 4 * seq_length * size


def neuron_cost(view: LayerView, metric: str) -> int:
    hidden = view.part("ffn_in").in_features
    return 2 * hidden + 1 if metric == "params" else 4 * hidden


def encoder_cost(model: "PreTrainedModel", metric: str, seq_length: int) -> int:
    """Encoder parameters, or encoder FLOPs per token: what pruning can shrink. Layer norms and the
    output bias count as parameters; additions, softmax and GELU are left out of FLOPs."""
    if metric == "params":
        return sum(p.numel() for view in layers(model) for p in view.module.parameters())
    return sum(
        view.num_heads * head_cost(view, "flops", seq_length) + view.ffn_size * neuron_cost(view, "flops")
        for view in layers(model)
    )


def describe(model: "PreTrainedModel", seq_length: int) -> dict:
    views = layers(model)
    return {
        "layers": len(views),
        "heads_per_layer": [v.num_heads for v in views],
        "kept_heads": {i: original_heads(model, i) for i in range(len(views))},
        "ffn_per_layer": [v.ffn_size for v in views],
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_parameters": encoder_cost(model, "params", seq_length),
        "encoder_flops_per_token": encoder_cost(model, "flops", seq_length),
        "flops_sequence_length": seq_length,
    }
