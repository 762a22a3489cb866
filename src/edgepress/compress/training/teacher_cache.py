"""Teacher outputs for the transfer set, computed once and cached in the run folder.

The teacher is frozen, so its logits (and the hidden states and attention maps the losses read)
are the same in every epoch and in every later stage that distills from it (pruning recovery).
On a CPU the teacher forward is a large share of a distillation step, so it is paid once per
example: the outputs are saved as safetensors under ``runs/<name>/cache/``, keyed by the
teacher's artifact hash, the texts, the sequence length and the layers kept.
Intermediate outputs are stored in float16, real tokens only (packed.py): on short texts the
padding to ``max_length`` would be most of the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from edgepress.compress.training.packed import Packed, maps_of, tokens_of
from edgepress.compress.training.relations import Capture, layer_of
from edgepress.data.features import encode, text_slice
from edgepress.tasks.tagging import is_words

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TeacherOutputs:
    logits: torch.Tensor  # [N, C] float32; token classification: [N, max_length, C], zero past each row's tokens
    hidden: dict[int, Packed] = field(default_factory=dict)  # teacher layer -> each text's [n, H] float16
    attentions: dict[int, Packed] = field(default_factory=dict)  # teacher layer -> each text's [heads, n, n] float16
    relations: dict[str, Packed] = field(default_factory=dict)  # query/key/value of the relation layer -> [n, W] float16

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"logits": self.logits}
        groups = {"hidden": self.hidden, "attention": self.attentions, "relation": self.relations}
        for group, items in groups.items():
            for name, packed in items.items():
                named.update({f"{group}.{name}": packed.values, f"{group}.{name}.offsets": packed.offsets})
                named[f"{group}.{name}.heads"] = torch.tensor([packed.heads])
        return named

    @classmethod
    def from_tensors(cls, named: dict[str, torch.Tensor]) -> "TeacherOutputs":
        def group(prefix: str) -> dict[str, Packed]:
            names = [k.split(".")[1] for k in named if k.startswith(prefix) and k.count(".") == 1]
            return {n: Packed(named[f"{prefix}{n}"], named[f"{prefix}{n}.offsets"], int(named[f"{prefix}{n}.heads"])) for n in names}

        hidden, attentions = group("hidden."), group("attention.")
        return cls(named["logits"], {int(k): v for k, v in hidden.items()}, {int(k): v for k, v in attentions.items()}, group("relation."))


@dataclass(frozen=True)
class CacheRequest:
    teacher_hash: str
    max_length: int
    hidden_layers: tuple[int, ...]
    attention_layers: tuple[int, ...]
    relation_layer: Optional[int] = None  # the layer whose queries, keys and values are kept (MiniLMv2)

    def key(self, rows: dict[str, list]) -> str:
        payload = {"request": self.__dict__, "text": rows["text"], "text_pair": rows.get("text_pair"), "layout": "packed"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:20]


def teacher_outputs(
    teacher: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    rows: dict[str, list],
    request: CacheRequest,
    cache_dir: Path,
    batch_size: int = 64,
) -> TeacherOutputs:
    """Cached outputs if this teacher already saw these texts with these settings, else compute and save."""
    from safetensors.torch import load_file, save_file

    from edgepress import distributed

    path = cache_dir / f"teacher-{request.key(rows)}.safetensors"
    if distributed.is_main() and not path.is_file():  # computed once, by the main process; the others wait
        outputs = run_teacher(teacher, tokenizer, rows, request, batch_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        save_file({k: v.contiguous() for k, v in outputs.tensors().items()}, str(partial))
        partial.replace(path)
        distributed.barrier()
        return outputs
    distributed.barrier()
    log.info("reusing cached teacher outputs %s", path)
    return TeacherOutputs.from_tensors(load_file(str(path)))


def run_teacher(
    teacher: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    rows: dict[str, list],
    request: CacheRequest,
    batch_size: int,
) -> TeacherOutputs:
    """One pass of the teacher over ``rows`` (``text``, optional ``text_pair``), in eval mode."""
    teacher.eval()
    count, length = len(rows["text"]), request.max_length
    per_token = is_words(rows)
    outputs = TeacherOutputs(torch.zeros((count, length, teacher.config.num_labels) if per_token else (count, teacher.config.num_labels)))
    capture = Capture(layer_of(teacher, request.relation_layer)) if request.relation_layer is not None else None
    try:
        _fill(outputs, teacher, tokenizer, rows, request, batch_size, capture)
    finally:
        if capture:
            capture.remove()
    return outputs


def _bar_name() -> str:
    """Named like the stage's training bars (``<run>/distill/teacher outputs``), so a log with several
    runs says whose teacher pass this is."""
    from edgepress.running.scope import current

    scope = current()
    return f"{scope.label}/teacher outputs" if scope else "teacher outputs"


def _fill(outputs: TeacherOutputs, teacher, tokenizer, rows: dict[str, list], request: CacheRequest, batch_size: int, capture) -> None:
    from tqdm.auto import tqdm

    count, length, per_token = len(rows["text"]), request.max_length, is_words(rows)
    lengths = torch.tensor([len(ids) for ids in encode(tokenizer, rows, length)["input_ids"]])  # each text's real tokens
    groups = {"hidden": outputs.hidden, "attention": outputs.attentions, "relation": outputs.relations}

    def put(group: str, name: object, start: int, piece: tuple[torch.Tensor, torch.Tensor]) -> None:
        if name not in groups[group]:  # the width is known from the first batch
            heads = teacher.config.num_attention_heads if group == "attention" else 0
            groups[group][name] = Packed.allocate(lengths, piece[0].shape[-1], heads)
        groups[group][name].put(start, piece)

    with torch.inference_mode():
        for start in tqdm(range(0, count, batch_size), desc=_bar_name(), unit="batch"):
            batch = text_slice(rows, start, start + batch_size)
            inputs = encode(tokenizer, batch, length, padding=True, return_tensors="pt")
            out = teacher(
                **inputs,
                output_hidden_states=bool(request.hidden_layers),
                output_attentions=bool(request.attention_layers),
            )
            end, seq, mask = start + len(batch["text"]), inputs["input_ids"].shape[1], inputs["attention_mask"]
            if per_token:
                outputs.logits[start:end, :seq] = out.logits.float()
            else:
                outputs.logits[start:end] = out.logits.float()
            for layer in request.hidden_layers:  # hidden_states[0] is the embeddings' output
                put("hidden", layer, start, tokens_of(out.hidden_states[layer + 1], mask))
            for layer in request.attention_layers:
                put("attention", layer, start, maps_of(out.attentions[layer], mask))
            for kind, value in (capture.outputs if capture else {}).items():
                put("relation", kind, start, tokens_of(value, mask))
