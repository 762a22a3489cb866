"""Building a distillation student: the teacher's architecture made smaller, or another model.

A student given by shape (depth, and optionally width, heads, FFN size) is built from the
teacher's config. With ``from_teacher`` its weights start as the teacher's: each kept layer is
copied from the teacher layer it stands for (DistilBERT's initialization), and matrices that are
narrower than the teacher's are sliced (the leading rows and columns), where shapes allow.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from edgepress.compress.training import relations
from edgepress.errors import RecipeError
from edgepress.models import auto_class, encoder_parts, load_classifier, task_of
from edgepress.recipe.sections import ModelSection
from edgepress.recipe.training import DistillLossSection, StudentSection

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")


@dataclass
class Student:
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    teacher_layers: Optional[list[int]]  # teacher layer each student layer was built from; None for other models


def evenly_spaced(teacher_depth: int, depth: int) -> list[int]:
    """Every (T/S)-th teacher layer from the first, as DistilBERT does: 6 -> 3 keeps [0, 2, 4]."""
    return [i * teacher_depth // depth for i in range(depth)]


def build_student(
    teacher: "PreTrainedModel",
    teacher_tokenizer: "PreTrainedTokenizerBase",
    spec: StudentSection,
    model_section: ModelSection,
    attn_implementation: Optional[str] = None,
) -> Student:
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if spec.model:
        section = model_section.model_copy(update={"name_or_path": spec.model, "revision": None})
        model, tokenizer = load_classifier(section, labels, attn_implementation=attn_implementation, task=task_of(teacher.config))
        return Student(model, tokenizer, None)
    _, teacher_layers = encoder_parts(teacher)
    if not spec.layers and spec.depth > len(teacher_layers) and not spec.allow_larger:
        raise RecipeError(
            f"distill.student.num_layers is {spec.depth} but the teacher has {len(teacher_layers)} layers; a student is smaller than "
            f"its teacher: give fewer layers (or set distill.student.allow_larger: true to build this one anyway)"
        )
    kept = spec.layers or evenly_spaced(len(teacher_layers), spec.depth)
    if max(kept) >= len(teacher_layers):
        raise RecipeError(
            f"distill.student.layers names layer {max(kept)} but the teacher has {len(teacher_layers)} layers (0-{len(teacher_layers) - 1})"
        )
    model = _from_config(teacher, spec, len(kept), attn_implementation)
    if model.num_parameters() >= teacher.num_parameters() and not spec.allow_larger:
        raise RecipeError(
            f"the student ({model.num_parameters():,} parameters) is not smaller than its teacher ({teacher.num_parameters():,}); "
            "give it fewer layers or a smaller width (or set distill.student.allow_larger: true to build it anyway)"
        )
    if spec.from_teacher:
        copy_teacher_weights(model, teacher, kept)
    return Student(model, teacher_tokenizer, kept)


def _from_config(teacher: "PreTrainedModel", spec: StudentSection, depth: int, attn: Optional[str]) -> "PreTrainedModel":
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = depth
    for name in ("hidden_size", "num_attention_heads", "intermediate_size"):
        if getattr(spec, name):
            setattr(config, name, getattr(spec, name))
    if config.hidden_size % config.num_attention_heads:
        raise RecipeError(
            f"student hidden_size {config.hidden_size} is not a multiple of num_attention_heads {config.num_attention_heads}"
        )
    if getattr(config, "pruned_heads", None):  # the student keeps every head of the layers it copies
        config.pruned_heads = {}
    return auto_class(task_of(teacher.config)).from_config(config, attn_implementation=attn)


def copy_teacher_weights(student: "PreTrainedModel", teacher: "PreTrainedModel", kept: list[int]) -> None:
    """Copy each student tensor from its teacher counterpart, slicing where the student is narrower."""
    import torch

    source = teacher.state_dict()
    with torch.no_grad():
        for name, tensor in student.state_dict().items():
            origin = LAYER_INDEX.sub(lambda m: f".layer.{kept[int(m.group(1))]}.", name, count=1)
            if origin not in source:
                continue
            value = source[origin]
            if value.dim() != tensor.dim() or any(t > v for t, v in zip(tensor.shape, value.shape)):
                continue  # a student dimension wider than the teacher's: nothing to slice from
            tensor.copy_(value[tuple(slice(0, size) for size in tensor.shape)])


def layer_map(
    loss: DistillLossSection, student: Student, student_depth: int, teacher_depth: int
) -> dict[int, int]:
    """Student layer -> teacher layer for the intermediate losses."""
    if loss.layer_map:
        mapping = dict(loss.layer_map)
    elif student.teacher_layers is not None:
        mapping = dict(enumerate(student.teacher_layers))
    else:  # TinyBERT's uniform map: student layer m learns from teacher layer m * T / S
        mapping = {i: (i + 1) * teacher_depth // student_depth - 1 for i in range(student_depth)}
    for s, t in mapping.items():
        if not (0 <= s < student_depth and 0 <= t < teacher_depth):
            raise RecipeError(
                f"distill.loss.layer_map maps student layer {s} to teacher layer {t}; the student has "
                f"{student_depth} layers and the teacher {teacher_depth}"
            )
    return mapping


def check_compatible(teacher, teacher_tokenizer, student: Student, loss: DistillLossSection) -> None:
    """Intermediate losses compare token positions and heads: they need the same tokenizer (and heads)."""
    if not loss.needs_intermediate:
        return
    if teacher_tokenizer.get_vocab() != student.tokenizer.get_vocab():
        raise RecipeError(
            "the student's tokenizer differs from the teacher's, so token positions do not line up and only "
            "logit distillation is possible; set distill.loss.hidden_weight, attention_weight and relation_weight to 0"
        )
    heads = (student.model.config.num_attention_heads, teacher.config.num_attention_heads)
    if loss.attention_weight > 0 and heads[0] != heads[1]:
        raise RecipeError(
            f"attention distillation compares heads one to one, but the student has {heads[0]} heads and the "
            f"teacher {heads[1]}; set distill.loss.attention_weight to 0 or give the student {heads[1]} heads"
        )
    if loss.relation_weight > 0:
        relations.check(loss, teacher, student.model)

