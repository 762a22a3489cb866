"""Tasks: what a label is, how a task's examples are read from raw rows and scored, which model head
serves it; one small object per task (base.py), looked up by the recipe's ``task`` name."""

from __future__ import annotations

from edgepress.tasks.base import Task
from edgepress.tasks.text import TextClassification
from edgepress.tasks.token import TokenClassification

TASKS: dict[str, Task] = {task.name: task for task in (TextClassification(), TokenClassification())}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
