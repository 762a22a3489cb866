"""Stage ``distill``: train a smaller student to imitate the fine-tuned teacher.

Losses: hard-label cross-entropy, soft-label KL at temperature T (Hinton et al.), hidden-state
MSE under a layer map with a learned projection when widths differ (TinyBERT), attention KL
(MiniLM), and self-attention relation KL of the last layer (MiniLMv2). Training runs through the
Transformers ``Trainer`` with a ``compute_loss`` override (distill_trainer.py), so distributed
launchers work; the teacher's outputs come from a cache (teacher_cache.py), so the teacher never
runs inside the training loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from edgepress import distributed
from edgepress.compress.training import relations, teacher_cache
from edgepress.compress.training.augment import augment_texts
from edgepress.compress.training.augment_tokens import augment_sentences
from edgepress.compress.training.distill_trainer import projections_for, train_with_teacher
from edgepress.compress.training.ensemble import with_ensemble
from edgepress.compress.training.students import Student, build_student, check_compatible, layer_map
from edgepress.compress.training.teacher_cache import CacheRequest, TeacherOutputs
from edgepress.compress.training.transfer import add_transfer
from edgepress.compress.training.trainer import checkpoint_dir
from edgepress.metrics import evaluate_torch, score
from edgepress.models import encoder_parts, load_classifier, save_artifact
from edgepress.recipe.training import AugmentSection, DistillSection
from edgepress.tasks.tagging import IGNORE
from edgepress.running.runs import recorded_metrics

if TYPE_CHECKING:
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    from transformers import set_seed

    cfg = ctx.recipe.distill
    set_seed(ctx.recipe.seed)
    # the transfer set first: a bad transfer source fails before any model is loaded
    rows = transfer_set(ctx.data.train.to_dict(), cfg.augment, ctx.recipe.seed, ctx.data.labels if ctx.data.tokens else None)
    rows, transfer = add_transfer(rows, cfg.transfer, ctx.data, ctx.recipe.seed)
    attn = "eager" if cfg.loss.attention_weight > 0 else None  # only eager attention returns probabilities
    teacher_section = ctx.recipe.model.model_copy(update={"name_or_path": ctx.input_model})
    teacher, teacher_tokenizer = load_classifier(
        teacher_section, ctx.data.labels, attn_implementation=attn, require_head=True, task=ctx.data.task
    )
    student = build_student(teacher, teacher_tokenizer, cfg.student, ctx.recipe.model, attn)
    check_compatible(teacher, teacher_tokenizer, student, cfg.loss)
    teacher_depth = len(encoder_parts(teacher)[1])
    mapping = layer_map(cfg.loss, student, len(encoder_parts(student.model)[1]), teacher_depth)
    if teacher_needed(cfg):
        outputs = teacher_outputs_for(ctx, cfg, ctx.input_hash, teacher, teacher_tokenizer, rows, mapping)
        outputs = with_ensemble(ctx, cfg, outputs, teacher_tokenizer, rows)
        if not ctx.data.tokens:  # augmented copies and transfer texts (text classification) get the teacher's label
            rows["label"] = teacher_labels(rows["label"], outputs.logits)
    else:  # hard labels only (a baseline): no loss reads the teacher, so skip its pass over the texts
        outputs = TeacherOutputs(torch.zeros(len(rows["text"]), teacher.config.num_labels))
    projections = projections_for(student.model, teacher.config.hidden_size, mapping, cfg.loss.hidden_weight > 0)
    del teacher
    summary = train_staged(student.model, student.tokenizer, projections, rows, outputs, mapping, cfg, ctx)
    save_artifact(student.model, student.tokenizer, ctx.out_dir)
    metrics = evaluate_torch(student.model, student.tokenizer, ctx.data, cfg.max_seq_length, batch_size=cfg.eval_batch_size)
    described = _describe(student, mapping, len(rows["text"]))
    return {**metrics, **_comparison(ctx, metrics), "train": summary, "student": described, **({"transfer": transfer} if transfer else {})}


def transfer_set(train: dict[str, list], cfg: AugmentSection, seed: int, tag_names: list[str] | None = None) -> dict[str, list]:
    """The training split plus ``cfg.factor`` augmented copies of each text. A copy's label is -1
    (the teacher labels it, see ``teacher_labels``) or, with ``cfg.labels: source``, the label of the
    text it was made from. For token classification (``tag_names`` given) the copies are edited
    sentences (augment_tokens.py) whose tags are ignored by the cross-entropy (the teacher's outputs
    are their targets) or, with ``cfg.labels: source``, the tags the edits imply."""
    rows = {k: list(train[k]) for k in ("text", "text_pair", "label") if k in train}
    if cfg.factor and tag_names is not None:
        return _tagged_copies(rows, cfg, seed, tag_names)
    if cfg.factor:
        texts, origins = distributed.computed_once(lambda: augment_texts(rows["text"], cfg, seed))
        if "text_pair" in rows:
            rows["text_pair"] += [rows["text_pair"][i] for i in origins]
        rows["text"] += texts
        rows["label"] += [rows["label"][i] for i in origins] if cfg.labels == "source" else [-1] * len(texts)
    return rows


def _tagged_copies(rows: dict[str, list], cfg: AugmentSection, seed: int, tag_names: list[str]) -> dict[str, list]:
    tags = [[tag_names[t] for t in sentence] for sentence in rows["label"]]
    words, new_tags, _ = distributed.computed_once(lambda: augment_sentences(rows["text"], tags, cfg, seed))
    ids = {name: i for i, name in enumerate(tag_names)}
    rows["text"] += words
    if cfg.labels == "source":
        rows["label"] += [[ids[t] for t in sentence] for sentence in new_tags]
    else:
        rows["label"] += [[IGNORE] * len(sentence) for sentence in words]
    return rows


def teacher_needed(cfg: DistillSection) -> bool:
    """Whether a loss term or an augmented copy's label reads the teacher's outputs."""
    labels_copies = cfg.augment.factor > 0 and cfg.augment.labels == "teacher"
    return cfg.loss.soft_weight > 0 or cfg.loss.needs_intermediate or labels_copies or cfg.transfer.on or bool(cfg.ensemble)


def teacher_labels(labels: list[int], teacher_logits: torch.Tensor) -> list[int]:
    """The hard labels of the transfer set: the teacher's prediction where a row has none (-1)."""
    return [label if label >= 0 else int(teacher_logits[i].argmax()) for i, label in enumerate(labels)]


def teacher_outputs_for(ctx, cfg, teacher_hash: str, teacher, tokenizer, rows, mapping) -> TeacherOutputs:
    """The teacher's outputs that ``cfg.loss`` reads, for ``rows``, from the run's cache when present."""
    layers = tuple(sorted(set(mapping.values())))
    request = CacheRequest(
        teacher_hash=teacher_hash,
        max_length=cfg.max_seq_length,
        hidden_layers=layers if cfg.loss.hidden_weight > 0 else (),
        attention_layers=layers if cfg.loss.attention_weight > 0 else (),
        relation_layer=relations.teacher_layer(cfg.loss, teacher) if cfg.loss.relation_weight > 0 else None,
    )
    # beside the stage folders, so that later stages distilling from this teacher reuse it
    return teacher_cache.teacher_outputs(teacher, tokenizer, rows, request, ctx.out_dir.parent / "cache", cfg.eval_batch_size)


def train_staged(model, tokenizer, projections, rows, outputs: TeacherOutputs, mapping, cfg: DistillSection, ctx) -> dict[str, Any]:
    """All loss terms together, or with ``cfg.intermediate_epochs`` two phases (TinyBERT's and
    XtremeDistil's stage-wise distillation): the intermediate terms alone first (the student's layers
    learn the teacher's representations; the head is not trained, so no best epoch is picked), then
    the prediction terms alone, with the usual best-epoch choice on validation."""
    seed, work = ctx.recipe.seed, checkpoint_dir(ctx.out_dir, "distill")
    if not cfg.intermediate_epochs:
        return train_with_teacher(model, tokenizer, projections, rows, outputs, mapping, cfg, ctx.data, seed, work)
    loss = cfg.loss
    first = cfg.model_copy(update={
        "epochs": cfg.intermediate_epochs, "max_steps": None, "early_stopping_patience": None,
        "loss": loss.model_copy(update={"hard_weight": 0.0, "soft_weight": 0.0}),
    })  # fmt: skip
    intermediate = train_with_teacher(
        model, tokenizer, projections, rows, outputs, mapping, first, ctx.data, seed, checkpoint_dir(ctx.out_dir, "distill-intermediate"),
        load_best_model_at_end=False,
    )  # fmt: skip
    second = cfg.model_copy(update={"loss": loss.model_copy(update={"hidden_weight": 0.0, "attention_weight": 0.0, "relation_weight": 0.0})})
    summary = train_with_teacher(model, tokenizer, projections, rows, outputs, mapping, second, ctx.data, seed, work)
    return {**summary, "intermediate_phase": intermediate}


def _comparison(ctx: "StageContext", metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The student's test score (accuracy; entity F1 for tokens) as a fraction of the teacher's, when known."""
    teacher_test = recorded_metrics(ctx.input_model)
    if not teacher_test or not score(teacher_test):
        return {}
    key = "test_f1_retained" if "f1" in teacher_test else "test_accuracy_retained"
    return {"teacher_test": teacher_test, key: round(score(metrics["test"]) / score(teacher_test), 4)}


def _describe(student: Student, mapping: dict[int, int], transfer_size: int) -> dict[str, Any]:
    config = student.model.config
    return {
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "teacher_layers": student.teacher_layers,
        "layer_map": mapping,
        "parameters": sum(p.numel() for p in student.model.parameters()),
        "transfer_set_size": transfer_size,
    }

