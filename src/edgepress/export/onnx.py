"""Stage ``export``: the previous stage's torch model to ONNX, checked against torch, then fused,
fp16 and mobile variants, each checked again.

The folder it writes opens with ``onnxruntime.InferenceSession(folder / "model.onnx")``, and, where
optimum-onnx is installed, with ``ORTModelForSequenceClassification.from_pretrained(folder)``
(``ORTModelForTokenClassification`` for a token classifier): the graph, config.json and the
tokenizer sit side by side, under the file names optimum expects.

Exporters: ``torch`` (the default) is ``torch.onnx.export(dynamo=True)``, fused by onnxscript;
``torchscript`` the older TorchScript exporter; ``optimum`` optimum-onnx's exporter, only where optimum-onnx is installed
(it requires transformers < 4.58, so not beside edgepress's default stack).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepress.errors import StageError
from edgepress.export import bundle
from edgepress.export.parity import check_parity, parity_cases, torch_references
from edgepress.export.runtime import evaluate_onnx, load_onnx, op_counts, open_session
from edgepress.export.fusion import optimize_graph
from edgepress.export.variants import write_fp16, write_ort_format
from edgepress.models import load_trained

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from edgepress.recipe.deploy import ExportSection
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    """Export ``ctx.input_model`` into ``ctx.out_dir`` and check every file written."""
    cfg = ctx.recipe.export
    if cfg.web:  # before any work: the folder carries the browser runtimes
        from edgepress.web.folder import runtime_modules

        runtime_modules()
    model_cfg = ctx.recipe.model.model_copy(update={"name_or_path": ctx.input_model})
    # eager attention: its MatMul/Softmax pattern is what ONNX Runtime's attention fusion recognizes
    model, tokenizer = load_trained(model_cfg, attn_implementation="eager", task=ctx.data.task)
    exporter = export_model(model, tokenizer, ctx.out_dir, cfg, ctx.data.task)
    cases = parity_cases(tokenizer, ctx.data.split("validation").to_dict(), cfg.max_seq_length, cfg.parity_examples)
    references = torch_references(model, cases)

    def checked(name: str, atol: float) -> dict[str, Any]:
        path = ctx.out_dir / name
        report = check_parity(open_session(path), cases, references, atol, name)
        log.info("%s: parity ok, max |diff| %.2e over %d examples", name, report["max_abs_diff"], report["examples"])
        return {"bytes": path.stat().st_size, "parity": report}

    files = {"model.onnx": checked("model.onnx", cfg.atol)}
    files["model.onnx"]["ops"] = op_counts(load_onnx(ctx.out_dir / "model.onnx"))
    deployed = "model.onnx"
    if cfg.optimize:
        files.update(_variants(ctx.out_dir, model, cfg, checked, exporter))
        deployed = "model_optimized.onnx"
    if cfg.with_tokenizer:
        files[bundle.bundle_name(deployed)] = bundle.write_for_stage(ctx.out_dir / deployed, tokenizer, ctx.data, cfg.max_seq_length, cfg.atol)
    if cfg.web:
        from edgepress.web.folder import write_for_stage

        files["web"] = write_for_stage(ctx, ctx.out_dir, {"fp32": ctx.out_dir / "model.onnx"})
    return {
        "exporter": exporter,
        "opset": cfg.opset,
        "files": files,
        "evaluated_file": deployed,
        **_accuracy(ctx, model, tokenizer, deployed),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _variants(out_dir: Path, model: "PreTrainedModel", cfg: "ExportSection", checked, exporter: str) -> dict[str, Any]:
    files: dict[str, Any] = {}
    stats = optimize_graph(
        out_dir / "model.onnx", out_dir / "model_optimized.onnx", model.config.model_type, model.config.num_hidden_layers, exporter
    )
    files["model_optimized.onnx"] = {**checked("model_optimized.onnx", cfg.atol), **stats}
    if cfg.mobile:
        for path in write_ort_format(out_dir / "model_optimized.onnx", out_dir):
            files[path.name] = checked(path.name, cfg.atol) if path.suffix == ".ort" else {"bytes": path.stat().st_size}
    if cfg.fp16:
        write_fp16(out_dir / "model_optimized.onnx", out_dir / "model_fp16.onnx")
        files["model_fp16.onnx"] = checked("model_fp16.onnx", cfg.fp16_atol)
    return files


def _accuracy(ctx: "StageContext", model: "PreTrainedModel", tokenizer, file_name: str) -> dict[str, Any]:
    """Validation and test accuracy of the deployed graph, when the model's labels are the data's."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != ctx.data.labels:
        log.warning(
            "the model's labels (%s) are not the data's (%s): accuracy is not measured; parity still is",
            ", ".join(labels), ", ".join(ctx.data.labels),
        )  # fmt: skip
        return {"accuracy_note": "model labels differ from the data's labels; accuracy not measured"}
    session = open_session(ctx.out_dir / file_name)
    cfg = ctx.recipe.export
    return evaluate_onnx(session, tokenizer, ctx.data, cfg.max_seq_length, batch_size=cfg.eval_batch_size)


def export_model(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", out_dir: Path, cfg: "ExportSection",
    task: str = "text-classification",
) -> str:  # fmt: skip
    """Write ``model.onnx`` (dynamic batch and sequence axes), config.json and the tokenizer.
    Returns the exporter used: ``auto`` is ``torch``, the dynamo exporter. Measured here under
    Transformers 5: neither ONNX Runtime's optimizer nor onnxscript fuses attention in a TorchScript
    graph of its BERT, while onnxscript fuses it in the dynamo graph (see ``fusion``)."""
    exporter = "torch" if cfg.exporter == "auto" else cfg.exporter
    if exporter == "optimum":
        _check_optimum(model.config.model_type, task)
    if exporter == "torch" and cfg.opset < 18:
        raise StageError(f"the dynamo exporter writes opset 18 or later, not {cfg.opset}; set export.opset: 18, or export.exporter: torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes are expected
        if exporter == "optimum":
            _export_optimum(model, tokenizer, out_dir, cfg.opset, task)
        else:
            _export_torch(model, tokenizer, out_dir, cfg.opset, task, dynamo=exporter == "torch")
    return exporter


def _check_optimum(model_type: str, task: str) -> None:
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  (importing it registers the architectures)
        from optimum.exporters.tasks import TasksManager
    except ImportError:
        raise StageError(
            "export.exporter: optimum needs optimum-onnx, which is not installed here (it requires transformers < 4.58); "
            "use export.exporter: torch, the default, or run optimum in an environment of its own"
        ) from None
    try:
        supported = task in TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx", library_name="transformers")
    except KeyError:
        supported = False
    if not supported:
        raise StageError(f"optimum's ONNX exporter does not support {task} for model type {model_type!r}; use export.exporter: torch")


def _export_optimum(model: "PreTrainedModel", tokenizer, out_dir: Path, opset: int, task: str) -> None:
    from optimum.exporters.onnx import onnx_export_from_model

    # optimum's own validation is off: ours (check_parity) runs real texts and fails the stage
    onnx_export_from_model(
        model, out_dir, opset=opset, task=task, do_validation=False, preprocessors=[tokenizer]
    )


def _export_torch(model: "PreTrainedModel", tokenizer, out_dir: Path, opset: int, task: str, dynamo: bool = True) -> None:
    import torch

    # two texts of different lengths, padded: batch and sequence axes both above 1, so neither is fixed
    sample = tokenizer(["a short text", "a somewhat longer text to pad the batch"], padding=True, return_tensors="pt")
    # input_names are given to the graph inputs in the order of forward's parameters, not the tokenizer's
    names = [n for n in inspect.signature(model.forward).parameters if n in sample]
    model.config.return_dict = True
    kwargs = {n: sample[n] for n in names}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = str(out_dir / "model.onnx")
    if dynamo:
        batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
        program = torch.onnx.export(
            model, (), kwargs=kwargs, dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            input_names=names, output_names=["logits"], opset_version=opset, dynamo=True, verbose=False,
        )  # fmt: skip
        program.save(path)
    else:
        axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
        # a token classifier's logits have a tag distribution per piece: the sequence axis is dynamic too
        axes["logits"] = axes[names[0]] if task == "token-classification" else {0: "batch_size"}
        torch.onnx.export(
            model, (), path, kwargs=kwargs, input_names=names, output_names=["logits"], dynamic_axes=axes,
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
