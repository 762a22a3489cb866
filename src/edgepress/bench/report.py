"""bench.json (schema ``edgepress.bench/1``; JSON Schema in ``schemas/bench.schema.json``) and report.md.

bench.json: ``schema``, ``created``, ``environment`` (CPU model and instruction sets, cores, OS,
library versions, execution provider), ``settings`` (the bench section, thread counts resolved),
``examples`` (test texts timed), and ``artifacts``: one entry per artifact with ``name``, ``kind``
(torch/onnx), ``precision`` (``fp16`` on rows that cuda timed in half precision), ``path``, ``bytes``, ``parameters``, ``test`` (accuracy, f1_macro as measured by the
stage that made it), ``session_rss_mb`` per thread count, ``latency[threads][case]`` (p50/p90/p99/
mean/std in ms, ``runs``, ``round_p50_ms``, ``sequences_per_s``), and ``speedup[threads][case]``
and ``size_ratio`` against the first artifact. On the arm64-emulated target, each row also has
``emulated: true`` and ``agreement`` (``argmax``: fraction of texts with the same predicted class as
on this machine, ``max_abs_diff``, ``examples``), and ``environment.emulated`` is true. On the browser
target, rows have ``runtime`` onnxruntime-web (the ONNX files) or transformers.js (kind ``web``: a
web-ready folder's whole pipeline, tokenizer included) and ``agreement``; ``environment.browser``
holds Chromium's and the runtimes' versions.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgepress.bench.plots import recommended, row_numbers, write_html, write_pareto
from edgepress.bench.runner import cpu_description
from edgepress.running.runs import environment

SCHEMA = "edgepress.bench/1"


def machine() -> dict[str, Any]:
    """The CPU and its instruction sets that matter for int8 kernels, and the software versions."""
    cpu, isa = cpu_description()
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), **environment()}


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-up (first artifact's p50 / this one's) per thread count and case, and size ratio."""
    first = rows[0]
    for row in rows:
        row["size_ratio"] = round(row["bytes"] / first["bytes"], 4) if first["bytes"] else None
        row["speedup"] = {
            threads: {
                case: round(first["latency"][threads][case]["p50_ms"] / stats["p50_ms"], 3)
                for case, stats in cases.items()
                if case in first["latency"].get(threads, {})
            }
            for threads, cases in row["latency"].items()
        }
    return rows


def bench_document(
    rows: list[dict[str, Any]], settings: dict[str, Any], examples: int, device: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document; ``device`` is the environment the runner reported on a remote or emulated target."""
    where = {"target": settings["target"], "provider": "CPUExecutionProvider"}
    if settings["target"] == "cuda":
        from edgepress.bench.measure import gpu_name

        where = {**where, "provider": "CUDAExecutionProvider", "gpu": gpu_name()}
    if settings["target"] == "arm64-emulated":
        where["emulated"] = True  # the gate refuses these latencies
    if settings["target"] == "browser":  # this machine's CPU, through the browser's WebAssembly
        where, device = {**where, "provider": "onnxruntime-web (wasm)", "browser": device}, None
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {**machine(), **where, **({"device": device} if device else {})},
        "settings": settings,
        "examples": examples,
        "artifacts": with_ratios(rows),
        "fastest": fastest(rows, settings.get("tolerance", 0.01)),
    }


def fastest(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Per thread count and case, the row with the lowest p50 among those whose test score is
    within ``tolerance`` (relative) of the reference: the most accurate fp32 graph (the deployed
    model before quantization), or the most accurate row when there is none. Rows without a test
    score (fp16 rows on cuda) are not candidates."""
    from edgepress.metrics import score

    scored = [r for r in rows if r["test"]]
    if not scored:
        return {"reference": None, "tolerance": tolerance, "by_threads": {}}
    graphs = [r for r in scored if r["kind"] in ("onnx", "openvino") and r.get("precision") == "fp32"]
    reference = max(graphs or scored, key=lambda r: score(r["test"]))
    floor = score(reference["test"]) * (1 - tolerance)
    candidates = [r for r in scored if score(r["test"]) >= floor]
    best: dict[str, dict[str, str]] = {}
    for row in candidates:
        for threads, cases in row["latency"].items():
            for case, stats in cases.items():
                current = best.setdefault(threads, {}).get(case)
                if current is None or stats["p50_ms"] < _p50(rows, current, threads, case):
                    best[threads][case] = row["name"]
    return {"reference": reference["name"], "tolerance": tolerance, "by_threads": best}


def _p50(rows: list[dict[str, Any]], name: str, threads: str, case: str) -> float:
    return next(r for r in rows if r["name"] == name)["latency"][threads][case]["p50_ms"]


def emulated_note(document: dict[str, Any]) -> str:
    """The warning every report of an emulated run carries; empty for native runs."""
    env = document["environment"]
    if not env.get("emulated"):
        return ""
    facts = env["device"]["emulated"]
    return (
        f"Emulated: arm64 kernels under {facts['qemu']} (-cpu {facts['cpu']}). These latencies are 55-260x those of a "
        "real device and say nothing about one; they are not comparable with native numbers. What this run checks is agreement."
    )


def _cell(row: dict, threads: str, case: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    value = row["latency"].get(threads, {}).get(case, {}).get(key)
    return "-" if value is None else fmt.format(value * scale)


def table(document: dict[str, Any]) -> list[list[str]]:
    """The summary table, header first: the same cells in report.md and report.html."""
    settings = document["settings"]
    threads = [str(t) for t in settings["threads"]]
    big = settings["cases"][-1] if len(settings["cases"]) > 1 else None
    tagging = any("f1" in row["test"] for row in document["artifacts"])  # token classification: entity F1
    head = ["#", "artifact", "test F1 (entity)" if tagging else "test acc", "MB", "params"]
    head += [f"p50 b1 {t}T ms" for t in threads] + [f"p99 b1 {threads[0]}T ms"]
    head += [f"{big} seq/s {threads[-1]}T"] if big else []
    head += [f"speed-up b1 {threads[-1]}T", "size"]
    rows = [head]
    for number, row in enumerate(document["artifacts"], start=1):
        accuracy = row["test"].get("f1" if tagging else "accuracy")
        cells = [str(number), row["name"], "-" if accuracy is None else f"{100 * accuracy:.2f}%", f"{row['bytes'] / 1e6:.1f}", f"{row['parameters'] / 1e6:.2f}M"]
        cells += [_cell(row, t, "batch 1", "p50_ms") for t in threads] + [_cell(row, threads[0], "batch 1", "p99_ms")]
        cells += [_cell(row, threads[-1], big, "sequences_per_s", fmt="{:.1f}")] if big else []
        speedup = row["speedup"].get(threads[-1], {}).get("batch 1")
        cells += ["-" if speedup is None else f"{speedup:.2f}x", f"{row['size_ratio']:.2f}x"]
        rows.append(cells)
    return rows


def markdown(document: dict[str, Any]) -> str:
    env, settings = document["environment"], document["settings"]
    head, *body = table(document)
    where = env
    if env.get("device"):  # an ssh target: describe the device, not the machine that drove it
        where = {**env["device"], "platform": f"{env['target']}, {env['device']['system']}, onnxruntime {env['device']['onnxruntime']}"}
    if env.get("gpu"):
        where = {**env, "platform": f"{env['gpu']}, {env['provider']}; host {env['platform']}"}
    if env.get("browser"):
        b = env["browser"]
        where = {**env, "platform": f"{b['browser']} headless, onnxruntime-web {b['onnxruntime_web']}, transformers.js {b['transformers_js']} (WebAssembly, cross-origin isolated: {b['cross_origin_isolated']}); host {env['platform']}"}
    lines = [
        f"# edgepress benchmark, {document['created']}",
        "",
        *([f"**{emulated_note(document)}**", ""] if env.get("emulated") else []),
        f"{where['cpu']} ({', '.join(where['isa']) or 'no AVX2/AVX-512/dot-product flags'}), {where['cores']} cores, "
        f"{where['platform']}; {document['examples']} test texts, {settings['rounds']} interleaved "
        f"round{'s' if settings['rounds'] != 1 else ''}, max {settings['max_seq_length']} tokens. Accuracy: on the whole test "
        "split, as measured by the stage that made each artifact (by bench for models named on the command line).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += _fastest_lines(document)
    if agreement := agreement_lines(document):
        lines += ["", AGREEMENT, "", *[f"- {line}" for line in agreement]]
    return "\n".join(lines) + "\n"


AGREEMENT = "Agreement with ONNX Runtime on this machine's CPU (same inputs, one thread; pipelines: label per text, or per token, and score):"


def agreement_lines(document: dict[str, Any]) -> list[str]:
    """One line per row that a target compared with this machine's outputs (emulated, ssh, browser)."""
    return [
        f"{r['name']}: predicted {'labels' if r['kind'] == 'web' else 'class'} {100 * r['agreement']['argmax']:.1f}% the same, "
        f"max |{'score' if r['kind'] == 'web' else 'logit'} difference| {r['agreement']['max_abs_diff']:.2e} over {r['agreement']['examples']} texts"
        for r in document["artifacts"] if "agreement" in r
    ]  # fmt: skip


def recommendation(document: dict[str, Any]) -> str:
    """One sentence: which artifact the report recommends on this target, and why."""
    name = recommended(document)
    if name is None:
        return ""
    chosen = document["fastest"]
    most = max(chosen["by_threads"], key=int)
    return (
        f"Recommended on this target ({document['environment']['target']}): #{row_numbers(document)[name]} {name}, the fastest at batch 1 "
        f"on {most} thread{'s' if most != '1' else ''} among the artifacts whose test score is within {100 * chosen['tolerance']:g}% "
        f"(relative) of {chosen['reference']}'s."
    )


def _fastest_lines(document: dict[str, Any]) -> list[str]:
    chosen = document.get("fastest") or {}
    if not chosen.get("by_threads"):
        return []
    lines = ["", f"**{recommendation(document)}**", "", f"Fastest on this target, among artifacts whose test score is within {100 * chosen['tolerance']:g}% (relative) "
             f"of {chosen['reference']}'s:", ""]  # fmt: skip
    for threads, cases in chosen["by_threads"].items():
        lines += [f"- {threads} thread{'s' if threads != '1' else ''}, {case}: {name}" for case, name in cases.items()]
    return lines


def write_reports(document: dict[str, Any], folder: Path, curves: list[tuple[str, dict[str, Any]]] = ()) -> None:
    """bench.json, report.md, pareto.png and report.html; ``curves``: the run's training curves
    (stage folder name, its curves.json runs), plotted in the HTML report."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(document), encoding="utf-8")
    plot = folder / "pareto.png"
    notes = [AGREEMENT, *agreement_lines(document)] if agreement_lines(document) else []
    write_html(
        document, table(document), plot if write_pareto(document, plot) else None, folder / "report.html", emulated_note(document), notes,
        recommendation(document), curves,
    )  # fmt: skip
