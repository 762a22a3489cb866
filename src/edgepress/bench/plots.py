"""pareto.png (accuracy against p50 latency) and a self-contained report.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.metrics import score, score_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher),
    ordered by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _points(document: dict[str, Any]) -> tuple[str, list[dict], list[tuple[float, float]]]:
    threads = str(document["settings"]["threads"][-1])
    rows = [
        a for a in document["artifacts"]
        if a["test"].get("accuracy") is not None and "batch 1" in a["latency"].get(threads, {})
    ]  # fmt: skip
    return threads, rows, [(a["latency"][threads]["batch 1"]["p50_ms"], 100 * score(a["test"])) for a in rows]


def write_pareto(document: dict[str, Any], path: Path) -> bool:
    """Accuracy against batch-1 p50 latency at the most threads, marker area by file size, the
    Pareto front drawn. False (and no file) when no artifact has both numbers."""
    figure = pareto_figure(document)
    if figure is None:
        return False
    import matplotlib.pyplot as plt

    figure.savefig(path)
    plt.close(figure)
    return True


def pareto_figure(document: dict[str, Any]) -> "Figure | None":
    """The plot, each artifact a marker numbered as its row of the table (names of close artifacts
    would cover each other), the recommended artifact ringed."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is assumed
    import matplotlib.pyplot as plt

    threads, rows, points = _points(document)
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    largest = max(a["bytes"] for a in rows) or 1
    numbers = row_numbers(document)
    for (latency, accuracy), artifact in zip(points, rows):
        axes.scatter(latency, accuracy, s=40 + 400 * artifact["bytes"] / largest, alpha=0.5)
    front = pareto_front(points)
    axes.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", linewidth=1, label="Pareto front")
    chosen = recommended(document)
    for (latency, accuracy), artifact in zip(points, rows):
        if artifact["name"] == chosen:
            axes.scatter(latency, accuracy, s=260, facecolors="none", edgecolors="crimson", linewidths=2, label=f"recommended: {numbers[chosen]}")
    axes.set_xlabel(f"p50 latency, batch 1, {threads} thread(s) (ms)")
    axes.set_ylabel(f"test {score_name(rows[0]['test'])} (%)")
    emulated = " - EMULATED arm64 latencies" if document["environment"].get("emulated") else ""
    axes.set_title(f"accuracy against latency (numbers: rows of the table; marker area: file size){emulated}", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)  # where it covers the fewest markers
    axes.margins(0.12)
    figure.tight_layout()
    place_labels(axes, [str(numbers[a["name"]]) for a in rows], points)
    return figure


def row_numbers(document: dict[str, Any]) -> dict[str, int]:
    """Each artifact's number: its row in the table, from 1."""
    return {a["name"]: i for i, a in enumerate(document["artifacts"], start=1)}


def recommended(document: dict[str, Any]) -> str | None:
    """The artifact the report recommends on this target: the fastest at batch 1 on every core
    among those within the accuracy tolerance (``fastest`` in bench.json)."""
    by_threads = (document.get("fastest") or {}).get("by_threads") or {}
    if not by_threads:
        return None
    most = max(by_threads, key=int)
    return by_threads[most].get("batch 1")


# offsets (points) tried in turn for a label, nearest first; a leader line joins a far label to its marker
_OFFSETS = [(7, 5), (7, -13), (-15, 5), (-15, -13), (0, 14), (0, -22)] + [(dx, dy) for r in (22, 32, 44) for dx, dy in
            ((r, r // 2), (r, -r // 2), (-r - 8, r // 2), (-r - 8, -r // 2), (0, r), (0, -r - 8))]  # fmt: skip


def place_labels(axes: "Axes", labels: list[str], points: list[tuple[float, float]]) -> list[Any]:
    """Annotate each point with its label where it overlaps no label placed before it (nor the
    other markers' centres): greedy over the offsets above, in display space. matplotlib has no
    label placement of its own; adjustText would do it, for one small loop a dependency is too much."""
    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    placed: list[Any] = []
    boxes: list[Any] = []
    centres = [axes.transData.transform(p) for p in points]
    for label, point in zip(labels, points):
        for dx, dy in _OFFSETS:
            far = abs(dx) > 15 or abs(dy) > 15
            note = axes.annotate(
                label, point, xytext=(dx, dy), textcoords="offset points", fontsize=8, fontweight="bold",
                arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.4"} if far else None,
            )  # fmt: skip
            box = note.get_window_extent(renderer).expanded(1.15, 1.2)
            if not any(box.overlaps(b) for b in boxes) and not any(box.contains(*c) for c in centres):
                break
            note.remove()
        else:  # every place taken: the last one, overlapping; the table still names it
            note = axes.annotate(label, point, xytext=_OFFSETS[-1], textcoords="offset points", fontsize=8, fontweight="bold")
            box = note.get_window_extent(renderer)
        boxes.append(box)
        placed.append(note)
    return placed


def write_html(
    document: dict[str, Any], markdown_table: list[list[str]], plot: Path | None, path: Path, note: str = "", notes: list[str] = (),
    recommendation: str = "", curves: list[tuple[str, dict[str, Any]]] = (),
) -> None:  # fmt: skip
    """One file, no external resources: ``note`` (emphasized), the recommendation, the table (the
    recommended row marked), the environment, the plot inlined, ``notes`` (a heading line and its
    items, e.g. agreement with this machine) and the training curves of the run's stages."""
    env = document["environment"]
    head, *body = markdown_table
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    chosen = recommended(document)
    rows = "".join(
        ("<tr class='recommended'>" if row[1] == chosen else "<tr>")
        + "".join(f"<td>{'&#9733; ' if i == 0 and row[1] == chosen else ''}{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in body
    )  # fmt: skip
    image = ""
    if plot is not None and plot.is_file():
        image = f'<img alt="accuracy against latency" src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}">'
    flat = lambda v: "(" + ", ".join(f"{k} {x}" for k, x in v.items()) + ")" if isinstance(v, dict) else v  # noqa: E731 - a browser's or device's facts
    details = ", ".join(f"{k}: {flat(v)}" for k, v in env.items() if k != "packages")
    listed = f"<p>{html.escape(notes[0])}</p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes[1:]) + "</ul>" if notes else ""
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>edgepress benchmark</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2){text-align:left}"
        "tr.recommended{background:#fde8e8;font-weight:bold}img{max-width:100%}"
        "</style></head><body>"
        f"<h1>edgepress benchmark</h1><p>{html.escape(document['created'])}</p>"
        + (f"<p><strong>{html.escape(note)}</strong></p>" if note else "")
        + (f"<p class='recommendation'>&#9733; {html.escape(recommendation)}</p>" if recommendation else "")
        + f"<p>{html.escape(details)}</p><p>{html.escape(packages)}</p>"
        f"<table><tr>{cells}</tr>{rows}</table>{listed}{image}{curves_html(curves)}</body></html>\n",
        encoding="utf-8",
    )


def curves_html(curves: list[tuple[str, dict[str, Any]]]) -> str:
    """A heading and one inlined plot per training stage (see training_plots.py)."""
    from edgepress.bench.training_plots import curves_png

    parts = []
    for stage, runs in curves:
        png = curves_png(stage, runs)
        if png:
            parts.append(f'<h3>{html.escape(stage)}</h3><img alt="training curves of {html.escape(stage)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    return "<h2>Training</h2>" + "".join(parts) if parts else ""
