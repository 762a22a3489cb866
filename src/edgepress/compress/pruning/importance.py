"""Importance scores of heads, FFN neurons and layers, measured on a sample of training data.

Heads and neurons get a mask of ones multiplied into the tensor that the layer's next matrix reads
(the concatenated heads before the attention output projection; the GELU activations before the
FFN down-projection). The gradient of the task loss with respect to a mask entry is a first-order
estimate of how much the loss changes when that unit is removed: for heads this is Michel et al.'s
head importance, for a neuron it equals the sum of w * dL/dw over the down-projection column that
reads it (first-order Taylor importance). Absolute values are summed over batches. Both are
estimates of the same quantity, a loss change, so a budget can weigh heads against neurons.

Forward pre-hooks, rather than Transformers' ``head_mask`` argument, so that one mechanism covers
heads and neurons with any attention implementation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch

from edgepress.compress.pruning.surgery import skipping
from edgepress.data.features import encode, text_slice
from edgepress.encoders import LayerView, layers
from edgepress.tasks.tagging import IGNORE, encode_labelled, is_words

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from edgepress.recipe.training import PruneImportanceSection


@dataclass
class Scores:
    heads: list[torch.Tensor]  # per layer, one score per current head
    neurons: list[torch.Tensor]  # per layer, one score per current FFN neuron


def batches(tokenizer: "PreTrainedTokenizerBase", rows: dict[str, list], max_length: int, batch_size: int) -> list[dict]:
    """Tokenized batches with labels, in the order of ``rows``; tagged sentences get piece labels
    (first piece of each word, the rest -100), so the token loss is the one scored."""
    out = []
    for start in range(0, len(rows["text"]), batch_size):
        if is_words(rows):
            batch = {k: rows[k][start : start + batch_size] for k in ("text", "label")}
            inputs = dict(encode_labelled(tokenizer, batch, max_length, padding=True))
            out.append({k: torch.tensor(v) for k, v in inputs.items()})
            continue
        inputs = dict(encode(tokenizer, text_slice(rows, start, start + batch_size), max_length, padding=True, return_tensors="pt"))
        inputs["labels"] = torch.tensor(rows["label"][start : start + batch_size])
        out.append(inputs)
    return out


@contextlib.contextmanager
def _masks(views: list[LayerView]) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    heads = [torch.ones(v.num_heads, requires_grad=True) for v in views]
    neurons = [torch.ones(v.ffn_size, requires_grad=True) for v in views]
    handles = []
    for view, head_mask, neuron_mask in zip(views, heads, neurons):
        size = view.head_size

        def on_heads(module, args, mask=head_mask, size=size):
            return (args[0] * mask.to(args[0].device, args[0].dtype).repeat_interleave(size),) + args[1:]

        def on_neurons(module, args, mask=neuron_mask):
            return (args[0] * mask.to(args[0].device, args[0].dtype),) + args[1:]

        handles.append(view.part("attention_output").register_forward_pre_hook(on_heads))
        handles.append(view.part("ffn_out").register_forward_pre_hook(on_neurons))
    try:
        yield heads, neurons
    finally:
        for handle in handles:
            handle.remove()


def gradient_scores(model: "PreTrainedModel", data: list[dict]) -> Scores:
    """|dL/d mask| per head and per neuron, summed over batches (see the module doc)."""
    views = layers(model)
    model.eval()  # no dropout: the scores should not depend on which units dropout happened to hit
    device = next(model.parameters()).device
    with _masks(views) as (heads, neurons):
        totals = [torch.zeros_like(m) for m in heads + neurons]
        for batch in data:
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            grads = torch.autograd.grad(loss, heads + neurons)
            for total, grad in zip(totals, grads):
                total += grad.detach().abs().cpu()
    return Scores(totals[: len(views)], totals[len(views) :])


def magnitude_scores(model: "PreTrainedModel") -> list[torch.Tensor]:
    """||row of the up-projection|| * ||column of the down-projection|| per neuron."""
    with torch.no_grad():
        return [
            (v.part("ffn_in").weight.norm(dim=1) * v.part("ffn_out").weight.norm(dim=0)).cpu() for v in layers(model)
        ]


def unit_scores(model: "PreTrainedModel", data: list[dict], cfg: "PruneImportanceSection", seed: int) -> Scores:
    views = layers(model)
    needs_gradients = cfg.heads == "gradient" or cfg.ffn == "taylor"
    scores = gradient_scores(model, data) if needs_gradients else Scores([], [])
    generator = torch.Generator().manual_seed(seed)
    if cfg.heads == "random":
        scores.heads = [torch.rand(v.num_heads, generator=generator) for v in views]
    if cfg.ffn == "magnitude":
        scores.neurons = magnitude_scores(model)
    elif cfg.ffn == "random":
        scores.neurons = [torch.rand(v.ffn_size, generator=generator) for v in views]
    return scores


def layer_scores(model: "PreTrainedModel", data: list[dict]) -> list[dict[str, float]]:
    """Per layer: the accuracy drop and loss increase on ``data`` when that layer is skipped."""
    base = _accuracy_and_loss(model, data)
    results = []
    for skip in range(len(layers(model))):
        with skipping(model, skip):
            accuracy, loss = _accuracy_and_loss(model, data)
        results.append({"accuracy_drop": round(base[0] - accuracy, 6), "loss_increase": round(loss - base[1], 6)})
    return results


def _accuracy_and_loss(model: "PreTrainedModel", data: list[dict]) -> tuple[float, float]:
    model.eval()
    device = next(model.parameters()).device
    correct = count = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for batch in data:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            labels = batch["labels"].to(device)
            scored = labels != IGNORE  # token classification: a word's first piece; every row otherwise
            correct += int(((out.logits.argmax(-1) == labels) & scored).sum())
            count += int(scored.sum())
            loss_sum += float(out.loss) * int(scored.sum())
    return correct / count, loss_sum / count
