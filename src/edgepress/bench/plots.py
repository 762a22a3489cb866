"""pareto.png (accuracy against p50 latency) and a self-contained report.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from edgepress.metrics import score, score_name


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
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is assumed
    import matplotlib.pyplot as plt

    threads, rows, points = _points(document)
    if not points:
        return False
    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    largest = max(a["bytes"] for a in rows) or 1
    for i, ((latency, accuracy), artifact) in enumerate(zip(points, rows)):
        axes.scatter(latency, accuracy, s=40 + 400 * artifact["bytes"] / largest, alpha=0.6)
        # staggered labels: artifacts of equal accuracy (int8 variants, plain and fused graphs) sit close
        axes.annotate(artifact["name"], (latency, accuracy), fontsize=7, xytext=(6, 6 - 9 * (i % 3)), textcoords="offset points")
    front = pareto_front(points)
    axes.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", linewidth=1, label="Pareto front")
    axes.set_xlabel(f"p50 latency, batch 1, {threads} thread(s) (ms)")
    axes.set_ylabel(f"test {score_name(rows[0]['test'])} (%)")
    emulated = " - EMULATED arm64 latencies" if document["environment"].get("emulated") else ""
    axes.set_title(f"accuracy against latency (marker area: file size){emulated}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def write_html(
    document: dict[str, Any], markdown_table: list[list[str]], plot: Path | None, path: Path, note: str = "", notes: list[str] = ()
) -> None:
    """One file, no external resources: ``note`` (emphasized), the table, the environment, the plot
    inlined, and ``notes`` (a heading line and its items, e.g. agreement with this machine)."""
    env = document["environment"]
    head, *body = markdown_table
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
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
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
        "</style></head><body>"
        f"<h1>edgepress benchmark</h1><p>{html.escape(document['created'])}</p>"
        + (f"<p><strong>{html.escape(note)}</strong></p>" if note else "")
        + f"<p>{html.escape(details)}</p><p>{html.escape(packages)}</p>"
        f"<table><tr>{cells}</tr>{rows}</table>{listed}{image}</body></html>\n",
        encoding="utf-8",
    )
