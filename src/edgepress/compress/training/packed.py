"""Per-text teacher tensors stored without their padding.

The teacher cache keeps hidden states, self-attention relations and attention maps for every
transfer text. Padded to ``max_seq_length`` they cost ``N x L x H`` halves per layer whatever the
texts' lengths: on SST-2 (70,000 phrases of about 13 pieces, padded to 64) that is 3.4 GB per hidden
layer and 4.8 times what the real tokens need (benchmarks/teacher_cache_size.py). Here each text's real positions (its attention mask)
are stored back to back with an offsets table, and a training batch gets them back scattered into
its own padded shape, wherever its tokenizer pads. torch's nested tensors would hold the rows, but
neither safetensors nor indexing a batch of rows out of them is supported, hence this small class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgepress.errors import StageError


class LengthMismatch(StageError):
    """A batch's real-token counts differ from the cached texts': another tokenizer or max length."""


@dataclass
class Packed:
    """Rows of different lengths back to back: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    ``heads == 0``: per-token rows, ``values`` is ``[tokens, width]``. ``heads > 0``: attention maps,
    each row a flattened ``[heads, n, n]`` block over its ``n`` real tokens."""

    values: torch.Tensor
    offsets: torch.Tensor  # [N + 1] int64
    heads: int = 0

    @classmethod
    def allocate(cls, lengths: torch.Tensor, width: int, heads: int = 0) -> "Packed":
        """Room for texts of ``lengths`` real tokens, filled batch by batch with ``put``: allocated once
        at its final size, so building the cache never holds it twice (joining per-batch pieces did,
        and the allocator kept the freed pieces resident)."""
        sizes = heads * lengths.long() ** 2 if heads else lengths.long()
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        shape = (int(offsets[-1]),) if heads else (int(offsets[-1]), width)
        return cls(torch.empty(shape, dtype=torch.float16), offsets, heads)

    def put(self, start: int, piece: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Rows ``start`` on, as ``tokens_of`` or ``maps_of`` gave them (values, each row's element count)."""
        values, sizes = piece
        stop = start + sizes.numel()
        if not torch.equal(sizes.cpu(), self.offsets[start + 1 : stop + 1] - self.offsets[start:stop]):
            raise LengthMismatch("the teacher's batch has other token counts than its texts tokenized alone; please report this")
        self.values[int(self.offsets[start]) : int(self.offsets[stop])] = values

    def lengths(self, idx: torch.Tensor) -> torch.Tensor:
        """Real tokens of rows ``idx``."""
        sizes = self.offsets[idx + 1] - self.offsets[idx]
        return torch.sqrt(sizes / self.heads).round().long() if self.heads else sizes

    def rows(self, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` laid out like a batch with attention ``mask`` ``[B, seq]``: zeros at padding."""
        idx, keep = idx.cpu().long(), mask.detach().cpu().bool()
        if not torch.equal(self.lengths(idx), keep.sum(1)):
            raise LengthMismatch(
                "the batch's texts have other token counts than the cached teacher outputs; the student must use the "
                "teacher's tokenizer and max_seq_length for the hidden-state, attention and relation terms"
            )
        out = self._maps(idx, keep) if self.heads else self._tokens(idx, keep)
        return out.to(mask.device)

    def _tokens(self, idx: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        spans = [torch.arange(s, e) for s, e in zip(self.offsets[idx].tolist(), self.offsets[idx + 1].tolist())]
        out = self.values.new_zeros((*keep.shape, *self.values.shape[1:]))
        out[keep] = self.values[torch.cat(spans)]  # boolean indexing walks rows in order, as the spans do
        return out

    def _maps(self, idx: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, seq = keep.shape
        out = self.values.new_zeros((batch, self.heads, seq, seq))
        for b, i in enumerate(idx.tolist()):
            where = keep[b].nonzero().squeeze(1)
            block = self.values[self.offsets[i] : self.offsets[i + 1]].view(self.heads, where.numel(), where.numel())
            out[b][:, where[:, None], where[None, :]] = block
        return out


def tokens_of(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch ``[B, seq, width]`` as its real tokens ``[tokens, width]`` and each row's count."""
    keep = mask.bool()
    return values[keep], keep.sum(1)


def maps_of(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps ``[B, heads, seq, seq]`` as their real-token blocks, flattened, and each row's size."""
    keep = mask.bool()
    blocks = [maps[b][:, keep[b]][:, :, keep[b]].reshape(-1) for b in range(maps.shape[0])]
    return torch.cat(blocks), torch.tensor([block.numel() for block in blocks], dtype=torch.long)
