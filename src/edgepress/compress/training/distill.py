"""Stage ``distill``: train a smaller student to imitate the fine-tuned teacher.

Losses: hard-label cross-entropy, soft-label KL at temperature T (Hinton et al.), hidden-state
MSE under a layer map with a learned projection when widths differ (TinyBERT), and attention KL
(MiniLM). Training runs through the Transformers ``Trainer`` with a ``compute_loss`` override, so
distributed launchers work; the teacher's outputs come from a cache (teacher_cache.py), so the
teacher never runs inside the training loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import Trainer

from edgepress import distributed
from edgepress.compress.training import losses, teacher_cache
from edgepress.compress.training.augment import augment_texts
from edgepress.compress.training.augment_tokens import augment_sentences
from edgepress.compress.training.ensemble import with_ensemble
from edgepress.compress.training.students import Student, build_student, check_compatible, layer_map
from edgepress.compress.training.teacher_cache import CacheRequest, TeacherOutputs
from edgepress.compress.training.transfer import add_transfer
from edgepress.compress.training.trainer import checkpoint_dir, early_stopping, train_resumable, train_summary, training_arguments
from edgepress.data.features import collator, tokenize_split
from edgepress.metrics import evaluate_torch, score, trainer_metrics_for
from edgepress.models import encoder_parts, load_classifier, save_artifact
from edgepress.recipe.training import AugmentSection, DistillLossSection, DistillSection
from edgepress.tasks.tagging import IGNORE
from edgepress.running.runs import recorded_metrics

if TYPE_CHECKING:
    import datasets

    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


class DistillationModule(nn.Module):
    """The student plus the projections that map its hidden states to the teacher's width.
    The projections exist only for training; the saved artifact is the student alone."""

    # compute_loss returns a batch mean: the Trainer must divide it by the accumulation steps itself
    accepts_loss_kwargs = False

    def __init__(self, student: nn.Module, projections: dict[int, nn.Module]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict({str(k): v for k, v in projections.items()})

    def forward(self, **inputs: Any) -> Any:
        return self.student(**inputs)


class DistillTrainer(Trainer):
    def __init__(self, *args: Any, teacher: TeacherOutputs, loss_cfg: DistillLossSection, mapping: dict[int, int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.loss_cfg = loss_cfg
        self.mapping = mapping
        self.term_sums: dict[str, float] = defaultdict(float)
        self.term_count = 0
        self.final_terms: dict[str, float] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        idx = inputs.pop("idx", None)
        labels = inputs.pop("labels")
        training = model.training and idx is not None
        cfg = self.loss_cfg
        out = model(  # through the wrapper: under DDP its forward is what synchronizes gradients
            **inputs,
            output_hidden_states=training and cfg.hidden_weight > 0,
            output_attentions=training and cfg.attention_weight > 0,
        )
        hard = losses.hard_ce(out.logits, labels)
        if not training:  # evaluation: the validation split has labels, not teacher outputs
            return (hard, {"logits": out.logits}) if return_outputs else hard
        terms = self._terms(model, out, hard, idx, inputs["attention_mask"])
        weights = {"hard": cfg.hard_weight, "soft": cfg.soft_weight, "hidden": cfg.hidden_weight, "attention": cfg.attention_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        self._record(terms)
        return (loss, {"logits": out.logits}) if return_outputs else loss

    def _terms(self, model, out, hard, idx, mask) -> dict[str, torch.Tensor]:
        cfg, teacher, seq = self.loss_cfg, self.teacher, mask.shape[1]
        idx = idx.cpu()
        terms = {"hard": hard}
        if cfg.soft_weight > 0:
            soft = teacher.logits[idx][:, :seq] if out.logits.dim() == 3 else teacher.logits[idx]  # tokens: cached to max length
            terms["soft"] = losses.soft_kl(out.logits, soft.to(out.logits.device), cfg.temperature, mask)
        if cfg.hidden_weight > 0:
            terms["hidden"] = sum(
                losses.hidden_mse(
                    getattr(model, "module", model).projections[str(s)](out.hidden_states[s + 1]),  # DDP wraps as .module
                    teacher.hidden[t][idx, :seq].to(mask.device),
                    mask,
                )
                for s, t in self.mapping.items()
            ) / len(self.mapping)
        if cfg.attention_weight > 0:
            terms["attention"] = sum(
                losses.attention_kl(out.attentions[s], teacher.attentions[t][idx, :, :seq, :seq].to(mask.device), mask)
                for s, t in self.mapping.items()
            ) / len(self.mapping)
        return terms

    def _record(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self.term_sums[name] += float(value.detach())
        self.term_count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.term_count:  # a training log: add each term's mean since the last one
            self.final_terms = {f"loss_{k}": round(v / self.term_count, 6) for k, v in self.term_sums.items()}
            logs.update(self.final_terms)
            self.term_sums.clear()
            self.term_count = 0
        super().log(logs, *args, **kwargs)


# --------------------------------------------------------------------------- the stage


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


def transfer_dataset(rows: dict[str, list], tokenizer, max_length: int, label_all_pieces: bool = False) -> "datasets.Dataset":
    """Tokenized transfer set; ``idx`` is each row's position in the teacher cache."""
    import datasets

    split = datasets.Dataset.from_dict({**rows, "idx": list(range(len(rows["text"])))})
    return tokenize_split(split, tokenizer, max_length, label_all_pieces)


def teacher_outputs_for(ctx, cfg, teacher_hash: str, teacher, tokenizer, rows, mapping) -> TeacherOutputs:
    """The teacher's outputs that ``cfg.loss`` reads, for ``rows``, from the run's cache when present."""
    layers = tuple(sorted(set(mapping.values())))
    request = CacheRequest(
        teacher_hash=teacher_hash,
        max_length=cfg.max_seq_length,
        hidden_layers=layers if cfg.loss.hidden_weight > 0 else (),
        attention_layers=layers if cfg.loss.attention_weight > 0 else (),
    )
    # beside the stage folders, so that later stages distilling from this teacher reuse it
    return teacher_cache.teacher_outputs(teacher, tokenizer, rows, request, ctx.out_dir.parent / "cache", cfg.eval_batch_size)


def projections_for(student: nn.Module, teacher_width: int, mapping: dict[int, int], needed: bool) -> dict[int, nn.Module]:
    """Linear maps from the student's hidden width to the teacher's, for the hidden-state loss."""
    if not needed:
        return {}
    width = student.config.hidden_size
    return {s: (nn.Linear(width, teacher_width) if width != teacher_width else nn.Identity()) for s in mapping}


def train_with_teacher(
    model, tokenizer, projections, rows, outputs: TeacherOutputs, mapping: dict[int, int], cfg, data, seed: int, work: Path,
    **arguments: Any,
) -> dict[str, Any]:
    """Train ``model`` on ``rows`` against the cached teacher ``outputs`` with ``cfg.loss``, picking the
    best evaluation on ``data.validation``. ``cfg`` is a training section with a ``loss`` (distill, prune)."""
    train = transfer_dataset(rows, tokenizer, cfg.max_seq_length, data.label_all_pieces)
    trainer = DistillTrainer(
        model=DistillationModule(model, projections),
        # the wrapper hides the student's signature: keep idx for compute_loss, and name the labels
        args=training_arguments(cfg, len(train), seed, work, remove_unused_columns=False, label_names=["labels"], **arguments),
        train_dataset=train,
        eval_dataset=tokenize_split(data.validation, tokenizer, cfg.max_seq_length),
        processing_class=tokenizer,
        data_collator=collator(tokenizer, train),
        compute_metrics=trainer_metrics_for(data),
        callbacks=early_stopping(cfg),
        teacher=outputs,
        loss_cfg=cfg.loss,
        mapping=mapping,
    )
    summary = train_summary(trainer, train_resumable(trainer, work), cfg)
    return {**summary, **trainer.final_terms}


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
    second = cfg.model_copy(update={"loss": loss.model_copy(update={"hidden_weight": 0.0, "attention_weight": 0.0})})
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

