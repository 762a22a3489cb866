"""Bench target ``browser`` (set up and driven by ``edgepress.web``): the run's ONNX files in onnxruntime-web (WebAssembly) in headless
Chromium, and the whole transformers.js pipeline of its web-ready folders.

One local server (127.0.0.1, cross-origin isolated) serves the bench page, the pinned runtimes and
the models; one page per thread count, since onnxruntime-web fixes its thread count when its
WebAssembly starts. Each page times batch 1 on the test texts' real lengths, every model
interleaved as the native runner does. The browser's outputs of the first page (one thread) are
compared with ONNX Runtime's on this CPU for the same inputs: a model whose predictions differ
fails the benchmark, like a parity check. Memory is not measured (a page cannot see its process's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepress.bench import runner
from edgepress.bench.artifacts import Artifact
from edgepress.bench.measure import artifact_row, encoded_cases, thread_counts
from edgepress.bench.targets import agreement, check_agreement, onnx_only, unique_names
from edgepress.errors import TargetError
from edgepress.recipe.deploy import BenchSection
from edgepress.web import folder as web_folder
from edgepress.web.browser import Page, launched
from edgepress.web.server import serving
from edgepress.web.target import BrowserTarget

log = logging.getLogger(__name__)
BROWSER_SETTINGS = {"batch_sizes": []}  # batch 1 at real lengths: what a page classifying one text does
PAGES = Path(web_folder.__file__).parent / "pages"  # bench.html beside the demo page


@dataclass
class WebFolder:
    """A web-ready folder the run wrote, and the artifacts its files are copies of."""

    path: Path
    label: str  # e.g. 03-quantize/web
    dtypes: dict[str, str]  # q8 -> onnx/model_quantized.onnx
    sources: dict[str, Artifact]  # dtype -> the artifact whose file it copies (its accuracy is the row's)
    task: str
    max_length: int  # the tokenizer's model_max_length there: the pipeline truncates to it


def measure_in_browser(artifacts: list[Artifact], rows: dict[str, list], cfg: BenchSection) -> tuple[list[dict], dict]:
    """Rows shaped like ``measure_all``'s (raw sessions, then pipelines), and the browser's facts."""
    from transformers import AutoTokenizer

    target = BrowserTarget.open(cfg.browser_root)
    onnx = _browser_models(artifacts)
    # each model with its own folder's tokenizer: a pruned student's trimmed vocabulary is not its teacher's
    by_folder = {f: encoded_cases(AutoTokenizer.from_pretrained(f), rows, cfg)["batch 1"] for f in dict.fromkeys(a.folder for a in onnx)}
    names = unique_names(onnx)
    threads = thread_counts(cfg)
    results = run_models(target, {names[a.name]: (a.path, by_folder[a.folder]) for a in onnx}, threads, cfg.rounds, cfg.warmup)
    outputs, measured = browser_outputs(results[threads[0]]), []
    for artifact in onnx:
        count = len(by_folder[artifact.folder])
        latency = {str(t): {"batch 1": runner.statistics(results[t]["times"][names[artifact.name]], cfg.rounds, count * cfg.rounds)} for t in threads}
        measured.append(_row(artifact, latency, "onnxruntime-web"))
        native = runner.first_outputs({names[artifact.name]: str(artifact.path)}, by_folder[artifact.folder])
        measured[-1]["agreement"] = agreement(native, outputs, names[artifact.name], count)
    check_agreement(measured, cfg.min_agreement)
    webs = web_folders(onnx)
    texts = [" ".join(t) if isinstance(t, (list, tuple)) else t for t in rows["text"]]
    piped = _pipeline_rows(webs, run_pipelines(target, webs, texts, threads, cfg.rounds, cfg.warmup), rows, cfg)
    return measured + piped, {**target.facts, **results[threads[0]]["environment"], "browser": f"Chromium {target.facts['chromium']}"}


def run_models(target: BrowserTarget, models: dict[str, tuple[Path, list[dict]]], threads: list[int], rounds: int, warmup: int) -> dict[int, dict]:
    """The bench page's result per thread count: call times per model, first outputs, the page's
    facts. ``models``: name -> (ONNX file, its tokenized batch-1 examples)."""
    routes = {"/lib/": target.modules, "/bench/": PAGES, **{f"/models/{name}": path for name, (path, _) in models.items()}}
    spec = {"models": [{"name": name, "url": f"/models/{name}", "examples": _lists(examples)} for name, (_, examples) in models.items()], "rounds": rounds, "warmup": warmup}
    results = {}
    with serving(routes) as url, launched(target.chromium) as browser:
        for count in threads:
            log.info("bench: browser, %d thread(s), %d ONNX models", count, len(models))
            page = Page(browser, f"{url}/bench/bench.html?threads={count}")
            results[count] = page.call("(spec) => window.benchModels(spec)", spec)
            page.close()
            _check_threads(results[count]["environment"], count)
    return results


def browser_outputs(result: dict) -> dict[str, np.ndarray]:
    """A page's first outputs as arrays keyed ``<model>.<i>``, as the native runner saves them."""
    return {f"{name}.{i}": _array(o) for name, outs in result["outputs"].items() for i, o in enumerate(outs)}


def run_pipelines(target: BrowserTarget, webs: list["WebFolder"], texts: list[str], threads: list[int], rounds: int, warmup: int) -> dict[str, dict]:
    """Per web folder and dtype: the demo page's pipeline timed per thread count, and its predictions
    (from the first thread count)."""
    found: dict[str, dict] = {}
    if not webs:
        return found
    routes = {f"/web{i}/": web.path for i, web in enumerate(webs)}
    with serving(routes) as url, launched(target.chromium) as browser:
        for count in threads:
            for i, web in enumerate(webs):
                for dtype in web.dtypes:
                    log.info("bench: browser, %d thread(s), %s %s through transformers.js", count, web.label, dtype)
                    page = Page(browser, f"{url}/web{i}/index.html?threads={count}&dtype={dtype}")
                    entry = found.setdefault(f"{web.label} {dtype}", {"times": {}})
                    if "predictions" not in entry:
                        entry["predictions"] = page.call("(texts) => window.edgepressPredict(texts)", texts)
                    timed = page.call("(a) => window.edgepressTime(a)", {"texts": texts, "rounds": rounds, "warmup": warmup})
                    page.close()
                    _check_threads(timed, count)
                    entry["times"][count] = timed["times"]
    return found


def _browser_models(artifacts: list[Artifact]) -> list[Artifact]:
    onnx = onnx_only(artifacts, "the browser target")
    if bundled := [a.name for a in onnx if a.bundle]:
        log.info("bench: onnxruntime-web has no onnxruntime-extensions tokenizer operators; not timed in the browser: %s", ", ".join(bundled))
    kept = [a for a in onnx if not a.bundle]
    if not kept:
        raise TargetError("the browser target runs plain ONNX models, and there are only models with their tokenizer inside; bench model.onnx or an int8 file")
    return kept


def web_folders(onnx: list[Artifact]) -> list[WebFolder]:
    """The web-ready folders beside the benched files, each dtype tied to the artifact it copies (by
    the manifest's ``from``). A file that an earlier folder already carries (the export's fp32
    graph, which quantize's folder copies) is timed once."""
    import json

    by_path = {str(a.path.resolve()): a for a in onnx}
    webs = {s: w for s in dict.fromkeys(a.folder for a in onnx) if (w := web_folder.find(s))}
    short = len({s.name for s in webs}) == len(webs)  # stage folder names tell them apart
    found, seen = [], set()
    for stage, web in webs.items():
        manifest = json.loads((web / "edgepress.json").read_text(encoding="utf-8"))
        dtypes = {d: f for d, f in manifest["dtypes"].items() if manifest["files"][f]["sha256"] not in seen}
        seen |= {manifest["files"][f]["sha256"] for f in dtypes.values()}
        sources = {d: by_path.get(str((web / manifest["files"][f]["from"]).resolve())) for d, f in dtypes.items()}
        label = f"{stage.name}/{web.name}" if short else f"{stage.parent.name}/{stage.name}/{web.name}"
        if dtypes:
            found.append(WebFolder(web, label, dtypes, sources, manifest["pipeline_task"], manifest["max_seq_length"]))
    return found


def _pipeline_rows(webs: list[WebFolder], found: dict[str, dict], texts: dict[str, list], cfg: BenchSection) -> list[dict]:
    """A row per web folder and dtype; its agreement is with ONNX Runtime on the same file, the texts
    truncated as the pipeline truncates them."""
    from transformers import AutoTokenizer

    rows = []
    for web in webs:
        examples = encoded_cases(AutoTokenizer.from_pretrained(web.path), texts, cfg.model_copy(update={"max_seq_length": web.max_length, "batch_sizes": []}))["batch 1"]
        for dtype, file in web.dtypes.items():
            source, entry = web.sources[dtype], found[f"{web.label} {dtype}"]
            name = f"{web.label} {dtype} (transformers.js pipeline)"
            artifact = Artifact(name, "web", web.path / file, web.path, source.test if source else {}, source.test_source if source else None, "int8" if dtype == "q8" else None)
            latency = {str(t): {"batch 1": runner.statistics(times, cfg.rounds, len(times))} for t, times in entry["times"].items()}
            row = _row(artifact, latency, "transformers.js")
            native = runner.first_outputs({"m": str(web.path / file)}, examples)
            row["agreement"] = pipeline_agreement(entry["predictions"], [native[f"m.{i}"] for i in range(len(examples))], web)
            rows.append(row)
    check_agreement(rows, cfg.min_agreement)
    return rows


def pipeline_agreement(predicted: list, logits: list[np.ndarray], web: WebFolder) -> dict[str, Any]:
    """The pipeline's labels against ONNX Runtime's argmax on the same file, text by text (for a
    tagger: every token of the text); ``max_abs_diff`` is of the scores (probabilities)."""
    import json

    labels = json.loads((web.path / "config.json").read_text(encoding="utf-8"))["id2label"]
    same, largest = 0, 0.0
    for output, native in zip(predicted, logits):
        probabilities = _softmax(native[0].astype(np.float64))
        if web.task == "text-classification":
            ours = {labels[str(i)]: p for i, p in enumerate(probabilities)}
            same += int(output[0]["label"] == labels[str(int(probabilities.argmax()))])
            largest = max(largest, *(abs(o["score"] - ours[o["label"]]) for o in output))
        else:
            tokens = [(t["index"], t["entity"], t["score"]) for t in output]
            same += int(bool(tokens) and all(entity == labels[str(int(probabilities[index].argmax()))] for index, entity, _ in tokens))
            largest = max(largest, *(abs(score - probabilities[index].max()) for index, _, score in tokens)) if tokens else largest
    return {"argmax": round(same / len(logits), 4), "max_abs_diff": float(largest), "examples": len(logits)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _row(artifact: Artifact, latency: dict, runtime: str) -> dict[str, Any]:
    row = artifact_row(artifact, latency, {t: None for t in latency})
    row["runtime"] = runtime
    return row


def _check_threads(environment: dict, threads: int) -> None:
    if threads > 1 and not environment.get("cross_origin_isolated"):
        raise TargetError("the bench page is not cross-origin isolated, so WebAssembly would run on one thread; the local server must send COOP/COEP headers")
    if environment.get("threads") != threads:
        raise TargetError(f"onnxruntime-web runs {environment.get('threads')} threads where {threads} were asked for")


def _lists(examples: list[dict[str, np.ndarray]]) -> list[dict[str, list[int]]]:
    return [{key: value[0].tolist() for key, value in example.items()} for example in examples]


def _array(output: dict) -> np.ndarray:
    return np.asarray(output["data"], dtype=np.float32).reshape(output["dims"])
