"""Stage ``prune``: remove heads, FFN neurons and layers from a classifier, with recovery.

Each of ``steps`` steps scores the units on a training sample (importance.py), removes the least
important ones from the weight matrices (surgery.py, plan.py), then recovers accuracy by
distillation from the teacher with the distill stage's trainer, losses and cached teacher outputs.
The artifact is a plain Transformers folder whose config records the smaller shapes.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress import distributed, encoders
from edgepress.compress.pruning import importance, surgery, vocabulary
from edgepress.compress.pruning.plan import Baseline, Cut, plan_budget, plan_fractions
from edgepress.compress.training.distill import teacher_labels, teacher_outputs_for
from edgepress.compress.training.distill_trainer import projections_for, train_with_teacher
from edgepress.compress.training.transfer import add_transfer
from edgepress.compress.training.students import Student, layer_map
from edgepress.compress.training.trainer import checkpoint_dir
from edgepress.data.features import text_slice
from edgepress.errors import RecipeError, StageError
from edgepress.metrics import evaluate_torch, score, score_name, torch_logits
from edgepress.models import is_local, load_artifact, load_classifier, resolve_source, save_artifact
from edgepress.running.runs import model_hash, read_manifest, recorded_metrics

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    from transformers import set_seed

    cfg = ctx.recipe.prune
    set_seed(ctx.recipe.seed)
    model, tokenizer = _load(ctx, ctx.input_model)
    seq = cfg.max_seq_length
    before = surgery.describe(model, seq)
    rows = _train_rows(ctx)
    sample = importance.batches(tokenizer, _sample(rows, cfg.importance.samples, ctx.recipe.seed), seq, cfg.importance.batch_size)
    dropped = _drop_layers(model, sample, cfg)
    steps, source = _steps(ctx, model, tokenizer, rows, sample, before) if cfg.structural else ([], None)
    # the last step already measured the model as it stands; without steps, the trim measures it
    measured = steps[-1]["validation_score_after_recovery"] if steps else None
    tokenizer, trimmed = _trim_vocabulary(ctx, model, tokenizer, rows, measured) if cfg.vocabulary.trim else (tokenizer, None)
    save_artifact(model, tokenizer, ctx.out_dir)
    _check_reload(model, ctx.out_dir, rows, seq)
    metrics = evaluate_torch(model, tokenizer, ctx.data, seq, batch_size=cfg.eval_batch_size)
    after = surgery.describe(model, seq)
    return {
        **metrics,
        **_comparison(ctx, metrics),
        "before": before,
        "after": after,
        "parameters_ratio": round(after["parameters"] / before["parameters"], 4),
        "encoder_flops_ratio": round(after["encoder_flops_per_token"] / before["encoder_flops_per_token"], 4),
        "dropped_layers": dropped,
        "validation_metric": score_name(metrics["validation"]),
        "steps": steps,
        "teacher": source,
        "vocabulary": trimmed,
    }


def _steps(ctx: "StageContext", model, tokenizer, rows: dict[str, list], sample: list[dict], before: dict) -> tuple[list[dict], str]:
    """Every pruning step, each with its recovery; returns their reports and the recovery teacher."""
    teacher = Teacher(ctx, model, tokenizer, rows)
    base = Baseline(
        [v.num_heads for v in encoders.layers(model)],
        encoders.layers(model)[0].ffn_size,
        {"params": before["encoder_parameters"], "flops": before["encoder_flops_per_token"]},
    )
    steps = [_step(ctx, model, tokenizer, sample, base, teacher, k) for k in range(1, ctx.recipe.prune.steps + 1)]
    if teacher.transfer:
        steps[0]["transfer"] = teacher.transfer  # what the recoveries read beside the training rows
    return steps, teacher.source


def _trim_vocabulary(ctx: "StageContext", model, tokenizer, rows: dict[str, list], accuracy: float | None) -> tuple[Any, dict[str, Any]]:
    """Keep the tokens the training texts use (vocabulary.py); fails if validation accuracy drops too far."""
    cfg = ctx.recipe.prune.vocabulary
    accuracy_before = _validation_score(ctx, model, tokenizer) if accuracy is None else accuracy
    params_before = model.num_parameters()
    plan = vocabulary.plan(tokenizer, vocabulary.token_counts(tokenizer, rows), cfg.min_count)
    trimmed = vocabulary.trimmed_tokenizer(tokenizer, plan.keep)
    texts = rows["text"] + rows.get("text_pair", [])
    checked = vocabulary.check_same_tokens(tokenizer, trimmed, texts) if cfg.min_count == 1 else 0
    vocabulary.slice_embeddings(model, plan.keep)
    accuracy_after = _validation_score(ctx, model, trimmed)
    drop = round(100 * (accuracy_before - accuracy_after), 2)
    log.info(
        "prune: vocabulary %d -> %d tokens, parameters %d -> %d; validation score %.2f%% -> %.2f%%",
        plan.before, len(plan.keep), params_before, model.num_parameters(), 100 * accuracy_before, 100 * accuracy_after,
    )  # fmt: skip
    if drop > cfg.max_accuracy_drop:
        raise StageError(
            f"vocabulary trimming cost {drop} validation points (accuracy; entity F1 for tokens) (limit prune.vocabulary.max_accuracy_drop = "
            f"{cfg.max_accuracy_drop}); lower prune.vocabulary.min_count, or set prune.vocabulary.trim to false"
        )
    return trimmed, {
        **plan.report(cfg.min_count),
        "parameters_before": params_before,
        "parameters_after": model.num_parameters(),
        "training_texts_same_tokens": checked,
        "validation_score_before": accuracy_before,
        "validation_score_after": accuracy_after,
    }


def _load(ctx: "StageContext", source: str) -> tuple["PreTrainedModel", Any]:
    section = ctx.recipe.model.model_copy(update={"name_or_path": source})
    return load_classifier(section, ctx.data.labels, require_head=True, task=ctx.data.task)


def _train_rows(ctx: "StageContext") -> dict[str, list]:
    train = ctx.data.train.to_dict()
    return {k: list(train[k]) for k in ("text", "text_pair", "label") if k in train}


def _sample(rows: dict[str, list], count: int, seed: int) -> dict[str, list]:
    picked = sorted(random.Random(seed).sample(range(len(rows["text"])), min(count, len(rows["text"]))))
    return {k: [v[i] for i in picked] for k, v in rows.items()}


# --------------------------------------------------------------------------- layers


def _drop_layers(model: "PreTrainedModel", sample: list[dict], cfg) -> dict[str, Any]:
    """Remove the listed layers, then the least important ones; returns what was removed and why."""
    depth = len(encoders.layers(model))
    if cfg.drop_layers and max(cfg.drop_layers) >= depth:
        raise RecipeError(f"prune.drop_layers names layer {max(cfg.drop_layers)} but the model has {depth} layers (0-{depth - 1})")
    if len(cfg.drop_layers) + cfg.drop_least_important_layers >= depth:
        raise RecipeError(f"prune would remove all {depth} layers; drop fewer (drop_layers, drop_least_important_layers)")
    drop, scores = list(cfg.drop_layers), None
    if cfg.drop_least_important_layers:
        scores = distributed.computed_once(lambda: importance.layer_scores(model, sample))
        ranked = sorted((s["accuracy_drop"], s["loss_increase"], i) for i, s in enumerate(scores) if i not in drop)
        drop += [i for _, _, i in ranked[: cfg.drop_least_important_layers]]
    kept = surgery.drop_layers(model, sorted(drop)) if drop else list(range(depth))
    if drop:
        log.info("prune: removed layers %s (kept %s of the input's layers)", sorted(drop), kept)
    return {"removed": sorted(drop), "kept": kept, "skip_scores": scores}


# --------------------------------------------------------------------------- steps


class Teacher:
    """The recovery teacher's cached outputs on the training rows, and the layer map of the losses."""

    def __init__(self, ctx: "StageContext", student: "PreTrainedModel", tokenizer, rows: dict[str, list]):
        cfg = ctx.recipe.prune
        self.source, teacher_hash = teacher_source(ctx)
        model, teacher_tokenizer = _load(ctx, self.source)
        if cfg.loss.hidden_weight > 0 and teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise RecipeError("the teacher's tokenizer differs from the model's, so prune.loss.hidden_weight must be 0")
        depth = len(encoders.layers(student))
        self.mapping = layer_map(cfg.loss, Student(student, tokenizer, None), depth, len(encoders.layers(model)))
        # the recoveries (not the importance scores or the vocabulary) also train on the transfer text
        rows, self.transfer = add_transfer(rows, cfg.transfer, ctx.data, ctx.recipe.seed, "prune.transfer")
        self.outputs = teacher_outputs_for(ctx, cfg, teacher_hash, model, teacher_tokenizer, rows, self.mapping)
        if self.transfer and not ctx.data.tokens:  # transfer texts take the teacher's label
            rows["label"] = teacher_labels(rows["label"], self.outputs.logits)
        self.projections = projections_for(student, model.config.hidden_size, self.mapping, cfg.loss.hidden_weight > 0)
        self.rows = rows


def teacher_source(ctx: "StageContext") -> tuple[str, str]:
    """The recovery teacher and its hash (the cache key): see ``prune.teacher``."""
    choice = ctx.recipe.prune.teacher
    if choice == "input":
        return ctx.input_model, ctx.input_hash
    if choice:
        source = resolve_source(choice)
        return source, model_hash(source)
    manifest = read_manifest(Path(ctx.input_model)) if is_local(ctx.input_model) else None
    if not manifest or manifest.get("stage") != "distill":
        return ctx.input_model, ctx.input_hash  # no recorded teacher: the unpruned model teaches itself
    recorded = manifest["input_model"]
    if not Path(recorded).is_dir() and not _hub_id(recorded):
        raise StageError(
            f"the teacher recorded in {ctx.input_model}/edgepress.json ({recorded}) no longer exists; "
            "set prune.teacher to its folder, or to 'input' to distill from the unpruned model"
        )
    return recorded, manifest["inputs"]["model"]


def _hub_id(name: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; a missing folder path has more parts or starts with a dot."""
    return name.count("/") <= 1 and not name.startswith((".", "/", "~"))


def _step(ctx: "StageContext", model, tokenizer, sample: list[dict], base: Baseline, teacher: Teacher, k: int) -> dict:
    cfg = ctx.recipe.prune
    views = encoders.layers(model)
    scores = distributed.computed_once(lambda: importance.unit_scores(model, sample, cfg.importance, ctx.recipe.seed + k))
    cut = _plan(model, scores, views, base, cfg, k)
    surgery.remove_heads(model, cut.heads)
    if any(cut.neurons.values()):
        surgery.remove_neurons(model, cut.neurons)
    shape = surgery.describe(model, cfg.max_seq_length)
    after_cut = _validation_score(ctx, model, tokenizer)
    recovery = train_with_teacher(
        model, tokenizer, teacher.projections, teacher.rows, teacher.outputs, teacher.mapping, cfg,
        ctx.data, ctx.recipe.seed + k, checkpoint_dir(ctx.out_dir, f"recovery-{k}"),
    )  # fmt: skip
    recovered = _validation_score(ctx, model, tokenizer)
    removed = cut.counts()
    log.info(
        "prune step %d/%d: removed %s heads (per layer) and %d FFN neurons per layer; validation score %.2f%% "
        "after the cut, %.2f%% after recovery", k, cfg.steps, "/".join(map(str, removed["heads"])) or "no",
        max(removed["neurons"] or [0]), 100 * after_cut, 100 * recovered,
    )  # fmt: skip
    return {
        "step": k,
        "removed": removed,
        "heads_per_layer": shape["heads_per_layer"],
        "ffn_per_layer": shape["ffn_per_layer"],
        "parameters": shape["parameters"],
        "encoder_flops_per_token": shape["encoder_flops_per_token"],
        "validation_score_after_cut": after_cut,
        "validation_score_after_recovery": recovered,
        "recovery": recovery,
    }


def _plan(model, scores, views, base: Baseline, cfg, k: int) -> Cut:
    if cfg.budget is None:
        return plan_fractions(scores, views, base, cfg, k)
    # the budget counts against the input, so layers dropped before the first step count towards it
    metric, seq = cfg.budget.metric, cfg.max_seq_length
    target = base.cost[metric] * (1 - (1 - cfg.budget.keep) * k / cfg.steps)
    return plan_budget(scores, views, cfg, surgery.encoder_cost(model, metric, seq), target, seq)


def _validation_score(ctx: "StageContext", model, tokenizer) -> float:
    """Validation accuracy (entity F1 for token classification): what cuts and trims are judged by."""
    cfg = ctx.recipe.prune
    result = evaluate_torch(model, tokenizer, ctx.data, cfg.max_seq_length, splits=("validation",), batch_size=cfg.eval_batch_size)
    return round(score(result["validation"]), 6)


# --------------------------------------------------------------------------- checks and report


def _check_reload(model, folder: Path, rows: dict[str, list], max_length: int) -> None:
    """The saved folder must reload with plain ``from_pretrained`` into the same function."""
    import numpy as np

    texts = text_slice(rows, 0, 8)
    reloaded, tokenizer = load_artifact(folder)
    # NaN marks words past the truncation limit (token classification): the same in both, so zeroed
    before, after = (np.nan_to_num(torch_logits(m, tokenizer, texts, max_length)) for m in (model, reloaded))
    diff = float(np.abs(before - after).max())
    if diff > 1e-4:
        raise StageError(f"the pruned model does not reload into the same model (max logit difference {diff:.2e}); this is a bug, please report it")


def _comparison(ctx: "StageContext", metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    before = recorded_metrics(ctx.input_model)
    if not before:
        return {}
    key = "test_f1_change_points" if "f1" in before else "test_accuracy_change_points"
    return {"input_test": before, key: round(100 * (score(metrics["test"]) - score(before)), 2)}
