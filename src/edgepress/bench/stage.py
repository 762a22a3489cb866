"""Stage ``bench``: every artifact of the run, measured side by side on this machine's CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.bench.artifacts import Artifact, run_artifacts, training_curves
from edgepress.bench.measure import case_names, measure_all, thread_counts
from edgepress.bench.report import bench_document, write_reports

if TYPE_CHECKING:
    from edgepress.data.load import SplitData
    from edgepress.recipe.deploy import BenchSection
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    cfg = ctx.recipe.bench
    run = ctx.out_dir.parent
    document = benchmark(run_artifacts(run, cfg.torch), ctx.data, cfg, ctx.out_dir, training_curves(run))
    return {"artifacts": len(document["artifacts"]), "accuracy_note": "every artifact's accuracy and latency in report.md"}


def benchmark(
    artifacts: list[Artifact], data: "SplitData", cfg: "BenchSection", folder: Path, curves: list[tuple[str, dict[str, Any]]] = ()
) -> dict[str, Any]:
    """Measure ``artifacts`` on the first ``cfg.examples`` test texts; write bench.json and the reports
    (``curves``: the run's training curves, for report.html)."""
    if cfg.target == "arm64-emulated":
        from edgepress.bench.targets import EMULATED_SETTINGS

        cfg = cfg.model_copy(update=EMULATED_SETTINGS)
    if cfg.target == "browser":
        from edgepress.bench.browser import BROWSER_SETTINGS

        cfg = cfg.model_copy(update=BROWSER_SETTINGS)
    _check_target(artifacts, cfg)
    measure_missing_accuracy(artifacts, data, cfg.max_seq_length, cfg.scoring_batch_size)
    test = data.test.to_dict()
    rows = {k: list(test[k][: cfg.examples]) for k in ("text", "text_pair") if k in test}  # sentences at their real lengths
    log.info("bench: %d artifacts, %d test texts, threads %s", len(artifacts), len(rows["text"]), thread_counts(cfg))
    settings = {**cfg.model_dump(mode="json"), "threads": thread_counts(cfg), "cases": case_names(cfg)}
    if cfg.target.startswith("ssh://"):
        from edgepress.bench.targets import measure_over_ssh

        measured, device = measure_over_ssh(artifacts, rows, cfg)
    elif cfg.target == "arm64-emulated":
        from edgepress.bench.targets import measure_emulated

        measured, device = measure_emulated(artifacts, rows, cfg)
    elif cfg.target == "browser":
        from edgepress.bench.browser import measure_in_browser

        measured, device = measure_in_browser(artifacts, rows, cfg)
    else:
        measured, device = measure_all(artifacts, rows, cfg), None
    document = bench_document(measured, settings, len(rows["text"]), device)
    write_reports(document, folder, curves)
    return document


def _check_target(artifacts: list[Artifact], cfg: "BenchSection") -> None:
    """Fail on a target that cannot run here before any model is loaded or evaluated."""
    if cfg.target == "cuda":
        from edgepress.bench.measure import check_cuda

        check_cuda(artifacts, cfg)
    elif cfg.target == "arm64-emulated":
        from edgepress.bench.emulator import Emulator

        Emulator.open(cfg.emulator_root)
    elif cfg.target == "browser":
        from edgepress.web.target import BrowserTarget

        BrowserTarget.open(cfg.browser_root)
    elif cfg.target.startswith("ssh://"):
        from edgepress.bench.targets import ssh_destination

        ssh_destination(cfg.target)


def measure_missing_accuracy(artifacts: list[Artifact], data: "SplitData", max_length: int, batch_size: int = 1) -> None:
    """Test accuracy of the artifacts no stage measured (models named on the command line), on
    this machine's CPU, so that every row of the report has one. ONNX and INC models are scored
    ``batch_size`` texts at a time: dynamic int8 scales each batch's activations together, so its
    predictions depend on the batch (the quantize stage scores at its deployment batch the same way)."""
    from edgepress.models import check_folder_labels

    for artifact in artifacts:
        if artifact.test:
            continue
        check_folder_labels(artifact.folder, data.labels, f"bench measures {artifact.name}'s accuracy on this data")
        log.info("bench: test accuracy of %s", artifact.name)
        artifact.test = _test_metrics(artifact, data, max_length, batch_size)
        artifact.test_source = "bench"


def _test_metrics(artifact: Artifact, data: "SplitData", max_length: int, batch_size: int) -> dict[str, float]:
    from transformers import AutoTokenizer

    if artifact.bundle:  # raw text in, its own tokenizer and truncation
        from edgepress.export.bundle import evaluate

        return evaluate(artifact.path, data)
    if artifact.kind == "inc":
        from edgepress.compress.quantization.inc import evaluate_folder

        return evaluate_folder(artifact.path, data, max_length, ("test",), batch_size)["test"]
    tokenizer = AutoTokenizer.from_pretrained(artifact.folder)
    if artifact.kind == "openvino":
        from edgepress.export import ir
        from edgepress.metrics import evaluate_splits

        compiled = ir.compile_ir(artifact.path, artifact.precision or "f32")
        return evaluate_splits(data, ("test",), lambda rows: ir.ir_logits(compiled, tokenizer, rows, max_length))["test"]
    if artifact.kind == "onnx":
        from edgepress.bench.runner import open_session
        from edgepress.export.runtime import evaluate_onnx

        return evaluate_onnx(open_session(str(artifact.path), 0), tokenizer, data, max_length, ("test",), batch_size)["test"]
    from edgepress.metrics import evaluate_torch
    from edgepress.models import auto_class, folder_task, from_pretrained

    model = from_pretrained(auto_class(folder_task(artifact.path)), artifact.path, use_safetensors=True).eval()
    return evaluate_torch(model, tokenizer, data, max_length, ("test",))["test"]
