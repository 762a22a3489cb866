"""Running under ``torchrun``: which process writes, and waiting for it.

edgepress has no distributed engine of its own: the launcher starts one process per device and sets
``RANK`` and ``WORLD_SIZE``; the Trainer does data-parallel training (DDP) across them. What edgepress
adds is who writes: only the main process (rank 0) takes the run lock, writes artifacts, manifests,
the teacher cache and reports, and renames stage folders; the others run the training stages with
it (DDP needs every rank) and wait at barriers for everything else. The process group is accelerate's
(``PartialState``), the one the Trainer uses: gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def backend() -> str | None:
    """The Trainer's ``ddp_backend``: None in a single process (nothing to set up)."""
    if world_size() == 1:
        return None
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def on_cpu() -> bool:
    """Several processes on CPU: the Trainer needs ``use_cpu`` to run them as one DDP group."""
    return backend() == "gloo"


def barrier() -> None:
    """Wait until every process gets here (nothing in a single process)."""
    if world_size() == 1:
        return
    state().wait_for_everyone()


def computed_once(compute: Callable[[], T]) -> T:
    """``compute()`` on the main process only; every other process receives its result (augmented
    texts, importance scores: the same on every rank, so computing them once saves the others' time).
    The result travels through ``torch.distributed.broadcast_object_list``, which pickles it: these
    are the run's own processes, not files from elsewhere."""
    if world_size() == 1:
        return compute()
    import torch.distributed as dist

    state()  # the process group exists from here on
    box = [compute() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def state():
    """accelerate's process state, set up as the Trainer's will be (``cpu``: accelerate treats
    several CPU processes as one unless told; the first set-up in a process is the one that holds)."""
    from accelerate import PartialState

    return PartialState(cpu=on_cpu(), backend=backend())
