"""A trial's final architecture, timed before anything is trained.

Latency depends on shapes, not on weight values: the probe builds the model the trial's recipe would
end with (the student's depth and width, the heads, neurons and layers the prune stage would remove)
from untrained weights, exports it with the export stage's own code, quantizes it with the recipe's
first int8 setting, and returns that file for the search's timer. Which heads go is decided by
importance scores after training, so the probe removes the same number from each layer (or overall)
but not the same ones; the count is what the run time depends on.

A budget prune (``prune.budget``) splits its cut between heads and neurons by scores, so its shape is
unknown until it runs: such recipes are not probed (``None``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgepress import encoders
from edgepress.compress.pruning import surgery
from edgepress.compress.pruning.importance import Scores
from edgepress.compress.pruning.plan import Baseline, plan_fractions
from edgepress.recipe.loading import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from edgepress.data.load import SplitData

log = logging.getLogger(__name__)


def probe_file(recipe: Recipe, data: "SplitData", work: Path) -> Path | None:
    """The trial's deployable ONNX file, untrained, written under ``work``; None when its shape is unknown."""
    from edgepress.compress.training.students import build_student
    from edgepress.models import load_classifier

    if "prune" in recipe.stages and recipe.prune.budget is not None:
        return None
    model, tokenizer = load_classifier(recipe.model, data.labels, attn_implementation="eager", task=data.task)
    if "distill" in recipe.stages:
        student = build_student(model, tokenizer, recipe.distill.student.model_copy(update={"from_teacher": False}), recipe.model, "eager")
        model, tokenizer = student.model, student.tokenizer
    if "prune" in recipe.stages:
        prune_like(model, recipe)
    return _export_like(model.eval(), tokenizer, recipe, data, work)


def prune_like(model: "PreTrainedModel", recipe: Recipe) -> None:
    """Remove as many layers, heads and FFN neurons as the prune stage would (the first ones: the
    stage picks them by importance, which needs a trained model)."""
    cfg = recipe.prune
    depth = len(encoders.layers(model))
    drop = list(cfg.drop_layers)
    drop += [i for i in range(depth) if i not in drop][: cfg.drop_least_important_layers]
    if drop and len(drop) < depth:
        surgery.drop_layers(model, sorted(drop))
    views = encoders.layers(model)
    base = Baseline([v.num_heads for v in views], views[0].ffn_size, {})
    flat = Scores([torch.zeros(v.num_heads) for v in views], [torch.zeros(v.ffn_size) for v in views])
    cut = plan_fractions(flat, views, base, cfg, cfg.steps)  # ties: the earliest positions
    surgery.remove_heads(model, cut.heads)
    if any(cut.neurons.values()):
        surgery.remove_neurons(model, cut.neurons)


def _export_like(model: "PreTrainedModel", tokenizer, recipe: Recipe, data: "SplitData", work: Path) -> Path:
    """What export (and quantize, when the recipe has it) would deploy."""
    from edgepress.compress.quantization.configs import first_config, resolve_target
    from edgepress.compress.quantization.search import Calibration, quantize
    from edgepress.export.onnx import export_model
    from edgepress.export.fusion import optimize_graph

    exporter = export_model(model, tokenizer, work, recipe.export)
    deployed = work / "model.onnx"
    if recipe.export.optimize:
        optimize_graph(deployed, work / "model_optimized.onnx", model.config.model_type, model.config.num_hidden_layers, exporter)
        deployed = work / "model_optimized.onnx"
    if "quantize" not in recipe.stages:
        return deployed
    cfg = recipe.quantize
    mode = "dynamic" if cfg.dynamic else "static"  # the quantize stage evaluates (and a search times) this one
    source = deployed if mode == "dynamic" else work / "model.onnx"
    calibration = None
    if mode == "static":
        count = min(32, cfg.calibration_samples, len(data.train))
        texts = {k: list(data.train[k][:count]) for k in ("text", "text_pair") if k in data.train.column_names}
        calibration = Calibration(tokenizer, texts, cfg.max_seq_length, cfg.calibration_padding)
    target = work / f"model_int8_{mode}.onnx"
    quantize(first_config(mode, cfg, resolve_target(cfg.target)[1]), source, target, calibration)
    return target
