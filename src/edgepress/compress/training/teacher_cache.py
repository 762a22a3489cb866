"""Teacher outputs for the transfer set, computed once and cached in the run folder.

The teacher is frozen, so its logits (and the hidden states and attention maps the losses read)
are the same in every epoch and in every later stage that distills from it (pruning recovery).
On a CPU the teacher forward is a large share of a distillation step, so it is paid once per
example: the outputs are saved as safetensors under ``runs/<name>/cache/``, keyed by the
teacher's artifact hash, the texts, the sequence length and the layers kept.
Intermediate outputs are stored in float16 and padded to ``max_length``.
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

from edgepress.compress.training.relations import Capture, layer_of
from edgepress.data.features import encode, text_slice
from edgepress.tasks.tagging import is_words

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TeacherOutputs:
    logits: torch.Tensor  # [N, C] float32; token classification: [N, max_length, C], zero past each row's tokens
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # teacher layer -> [N, L, H] float16
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)  # teacher layer -> [N, heads, L, L] float16
    relations: dict[str, torch.Tensor] = field(default_factory=dict)  # query/key/value of the relation layer -> [N, L, W] float16

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"logits": self.logits}
        named.update({f"hidden.{layer}": t for layer, t in self.hidden.items()})
        named.update({f"attention.{layer}": t for layer, t in self.attentions.items()})
        named.update({f"relation.{kind}": t for kind, t in self.relations.items()})
        return named

    @classmethod
    def from_tensors(cls, named: dict[str, torch.Tensor]) -> "TeacherOutputs":
        def layers(prefix: str) -> dict[int, torch.Tensor]:
            return {int(k.split(".")[1]): v for k, v in named.items() if k.startswith(prefix)}

        relations = {k.split(".")[1]: v for k, v in named.items() if k.startswith("relation.")}
        return cls(named["logits"], layers("hidden."), layers("attention."), relations)


@dataclass(frozen=True)
class CacheRequest:
    teacher_hash: str
    max_length: int
    hidden_layers: tuple[int, ...]
    attention_layers: tuple[int, ...]
    relation_layer: Optional[int] = None  # the layer whose queries, keys and values are kept (MiniLMv2)

    def key(self, rows: dict[str, list]) -> str:
        payload = {"request": self.__dict__, "text": rows["text"], "text_pair": rows.get("text_pair")}
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


def _fill(outputs: TeacherOutputs, teacher, tokenizer, rows: dict[str, list], request: CacheRequest, batch_size: int, capture) -> None:
    from tqdm.auto import tqdm

    count, length, per_token = len(rows["text"]), request.max_length, is_words(rows)
    with torch.inference_mode():
        for start in tqdm(range(0, count, batch_size), desc="teacher outputs", unit="batch"):
            batch = text_slice(rows, start, start + batch_size)
            inputs = encode(tokenizer, batch, length, padding=True, return_tensors="pt")
            out = teacher(
                **inputs,
                output_hidden_states=bool(request.hidden_layers),
                output_attentions=bool(request.attention_layers),
            )
            end, seq = start + len(batch["text"]), inputs["input_ids"].shape[1]
            if per_token:
                outputs.logits[start:end, :seq] = out.logits.float()
            else:
                outputs.logits[start:end] = out.logits.float()
            for layer in request.hidden_layers:  # hidden_states[0] is the embeddings' output
                buffer = outputs.hidden.setdefault(layer, torch.zeros(count, length, teacher.config.hidden_size, dtype=torch.float16))
                buffer[start:end, :seq] = out.hidden_states[layer + 1].half()
            for layer in request.attention_layers:
                heads = teacher.config.num_attention_heads
                buffer = outputs.attentions.setdefault(layer, torch.zeros(count, heads, length, length, dtype=torch.float16))
                buffer[start:end, :, :seq, :seq] = out.attentions[layer].half()
            for kind, value in (capture.outputs if capture else {}).items():
                buffer = outputs.relations.setdefault(kind, torch.zeros(count, length, value.shape[-1], dtype=torch.float16))
                buffer[start:end, :seq] = value.half()
