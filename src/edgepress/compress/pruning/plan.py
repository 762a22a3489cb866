"""Which heads and neurons one pruning step removes, from their scores and the stage's targets.

Step k of K removes what brings the model to k/K of the way: fractions are counted against the
model as it was before the first step, so rounding never compounds across steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgepress.compress.pruning.importance import Scores
from edgepress.compress.pruning.surgery import head_cost, neuron_cost
from edgepress.encoders import LayerView
from edgepress.errors import StageError
from edgepress.recipe.training import PruneSection


@dataclass
class Cut:
    heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> current head positions to remove
    neurons: dict[int, list[int]] = field(default_factory=dict)  # layer -> current neuron positions to remove

    def counts(self) -> dict[str, list[int]]:
        return {"heads": [len(v) for _, v in sorted(self.heads.items())], "neurons": [len(v) for _, v in sorted(self.neurons.items())]}


@dataclass(frozen=True)
class Baseline:
    """The model before pruning: head counts and FFN size at the first step, and the encoder's
    parameters and FLOPs per token of the input (what a budget counts against)."""

    heads: list[int]  # per layer
    ffn: int
    cost: dict[str, int]  # "params" / "flops" -> value


def _half_up(x: float) -> int:
    """Rounding half up: Python's round() sends 0.5 to 0, which would leave a first step empty."""
    return int(x + 0.5)


def lowest(scores: torch.Tensor, count: int) -> list[int]:
    """Positions of the ``count`` lowest scores (ties: the earlier position first)."""
    if count <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:count])


def plan_fractions(scores: Scores, views: list[LayerView], base: Baseline, cfg: PruneSection, step: int) -> Cut:
    share = step / cfg.steps
    cut = Cut()
    current = [v.num_heads for v in views]
    if cfg.heads:
        if cfg.head_scope == "per_layer":
            for i, view in enumerate(views):
                target = _half_up(cfg.heads * share * base.heads[i]) - (base.heads[i] - current[i])
                cut.heads[i] = lowest(scores.heads[i], min(target, current[i] - cfg.min_heads_per_layer))
        else:
            target = _half_up(cfg.heads * share * sum(base.heads)) - (sum(base.heads) - sum(current))
            cut.heads = _global_heads(scores, current, target, cfg.min_heads_per_layer)
    if cfg.ffn:
        size = views[0].ffn_size
        target = _half_up(cfg.ffn * share * base.ffn) - (base.ffn - size)
        cut.neurons = {i: lowest(scores.neurons[i], min(target, size - 1)) for i in range(len(views))}
    return cut


def _global_heads(scores: Scores, current: list[int], count: int, floor: int) -> dict[int, list[int]]:
    ranked = sorted(
        ((float(s), layer, pos) for layer, layer_scores in enumerate(scores.heads) for pos, s in enumerate(layer_scores))
    )
    left = list(current)
    chosen: dict[int, list[int]] = {i: [] for i in range(len(current))}
    for _, layer, pos in ranked:
        if count <= 0:
            break
        if left[layer] > floor:
            chosen[layer].append(pos)
            left[layer] -= 1
            count -= 1
    return {layer: sorted(p) for layer, p in chosen.items()}


def plan_budget(
    scores: Scores, views: list[LayerView], cfg: PruneSection, current_cost: int, target_cost: float, seq_length: int
) -> Cut:
    """Greedy: remove the unit with the lowest estimated loss increase per unit of cost until the
    encoder fits ``target_cost``. FFN neurons go a row at a time: the k-th least important neuron of
    every layer together, which keeps the FFN size the same in every layer."""
    metric = cfg.budget.metric
    candidates = []  # (score per cost, order, kind, layer, position or row, cost)
    for layer, (view, layer_scores) in enumerate(zip(views, scores.heads)):
        cost = head_cost(view, metric, seq_length)
        candidates += [(float(s) / cost, len(candidates), "head", layer, pos, cost) for pos, s in enumerate(layer_scores)]
    ordered = [torch.sort(s).indices for s in scores.neurons]
    row_cost = sum(neuron_cost(v, metric) for v in views)
    for row in range(views[0].ffn_size - 1):  # every layer keeps at least one neuron
        score = sum(float(s[o[row]]) for s, o in zip(scores.neurons, ordered))
        candidates.append((score / row_cost, len(candidates), "row", -1, row, row_cost))
    cut, left = Cut(), [v.num_heads for v in views]
    rows = 0
    for _, _, kind, layer, where, cost in sorted(candidates):
        if current_cost <= target_cost:
            break
        if kind == "head" and left[layer] > cfg.min_heads_per_layer:
            cut.heads.setdefault(layer, []).append(where)
            left[layer] -= 1
            current_cost -= cost
        elif kind == "row" and where == rows:  # rows are taken in order, lowest first
            rows += 1
            current_cost -= cost
    if current_cost > target_cost:
        raise StageError(
            f"prune.budget.keep={cfg.budget.keep} cannot be met: with {cfg.min_heads_per_layer} head(s) and one FFN "
            f"neuron left per layer the encoder still has {current_cost:,} {metric}; raise keep, or drop layers too"
        )
    cut.neurons = {i: sorted(int(x) for x in o[:rows]) for i, o in enumerate(ordered)}
    cut.heads = {layer: sorted(p) for layer, p in cut.heads.items()}
    return cut
