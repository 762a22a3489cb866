"""The deployment stages' commands (export, quantize): flags become recipe values, the rest of the
recipe keeps its defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepress.cli.common import ForceOption, SetOption, execute, given, origin_of, reported
from edgepress.cli.stages import (
    AllowPickleOption,
    LabelColumnOption,
    MaxSeqLengthOption,
    NameOption,
    OutputOption,
    RecipeOption,
    TaskOption,
    TextColumnOption,
    TextPairColumnOption,
    TrustRemoteCodeOption,
)


@reported
def export(
    model: str = typer.Option(..., help="Classifier folder (e.g. runs/bbc-news/02-distill) or Hub id."),
    data: str = typer.Option("builtin:bbc-news", help="Data whose validation texts check parity (and measure accuracy)."),
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    exporter: Optional[str] = typer.Option(None, help="torch (torch.onnx.export with dynamo, the default), torchscript, or optimum (where optimum-onnx is installed)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default 18)."),
    atol: Optional[float] = typer.Option(None, help="Largest allowed |torch - ONNX| logit difference (default 1e-4)."),
    optimize: Optional[bool] = typer.Option(None, "--optimize/--no-optimize", help="Write the fused graph too (default on)."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--no-fp16", help="Write an fp16 graph for GPUs (default off)."),
    mobile: Optional[bool] = typer.Option(None, "--mobile/--no-mobile", help="Write the ORT mobile format (default on)."),
    with_tokenizer: Optional[bool] = typer.Option(
        None, "--with-tokenizer/--no-with-tokenizer", help="Also write a copy with the tokenizer inside: text in, label out."
    ),
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    allow_pickle: bool = AllowPickleOption,
    trust_remote_code: bool = TrustRemoteCodeOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Export a classifier to ONNX: parity-checked, fused, and in the ORT mobile format."""
    from edgepress.recipe.loading import load_recipe

    flags = {
        "task": task,
        "stages": ["export"], "name": name if name is not None else (None if recipe else "export"), "output_dir": output_dir,
        "model.name_or_path": model, "data.source": data,
        "data.text_column": text_column, "data.text_pair_column": text_pair_column, "data.label_column": label_column,
        "model.allow_pickle": allow_pickle or None, "model.trust_remote_code": trust_remote_code or None,
        "export.exporter": exporter, "export.opset": opset, "export.atol": atol, "export.optimize": optimize,
        "export.fp16": fp16, "export.mobile": mobile, "export.max_seq_length": max_seq_length, "export.with_tokenizer": with_tokenizer,
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "export"))


@reported
def quantize(
    model: str = typer.Option(..., help="Folder of the export stage (model.onnx, model_optimized.onnx, config, tokenizer)."),
    data: str = typer.Option("builtin:bbc-news", help="The data the model was trained on: calibration and accuracy checks."),
    text_column: Optional[str] = TextColumnOption,
    text_pair_column: Optional[str] = TextPairColumnOption,
    label_column: Optional[str] = LabelColumnOption,
    task: Optional[str] = TaskOption,
    backend: Optional[str] = typer.Option(None, help="onnxruntime (default), neural-compressor (int8 PyTorch), openvino (IR + NNCF int8), or several: onnxruntime,openvino."),
    target: Optional[str] = typer.Option(None, help="auto (this CPU), avx2, avx512, avx512_vnni or arm64."),
    dynamic: Optional[bool] = typer.Option(None, "--dynamic/--no-dynamic", help="Write the dynamic int8 model (default on)."),
    static: Optional[bool] = typer.Option(None, "--static/--no-static", help="Write the static int8 model (default on)."),
    calibration_method: Optional[str] = typer.Option(None, help="minmax, entropy or percentile."),
    calibration_samples: Optional[int] = typer.Option(None, help="Training texts used for calibration (default 128)."),
    quant_format: Optional[str] = typer.Option(None, "--format", help="QDQ or QOperator (static)."),
    per_channel: Optional[bool] = typer.Option(None, "--per-channel/--per-tensor", help="Weight scales per channel."),
    tolerance: Optional[float] = typer.Option(None, help="Largest relative validation-accuracy drop (default 0.01)."),
    tune: Optional[bool] = typer.Option(None, "--tune/--no-tune", help="Search settings when the first misses the tolerance."),
    select: Optional[str] = typer.Option(None, help="first (default): the first setting within the tolerance; most_accurate: try them all."),
    exclude_op_type: Optional[list[str]] = typer.Option(None, help="Op type kept in fp32 (repeatable)."),
    exclude_node: Optional[list[str]] = typer.Option(None, help="Node name kept in fp32 (repeatable)."),
    with_tokenizer: Optional[bool] = typer.Option(
        None, "--with-tokenizer/--no-with-tokenizer", help="Also write a copy with the tokenizer inside: text in, label out."
    ),
    max_seq_length: Optional[int] = MaxSeqLengthOption,
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[list[str]] = SetOption,
    name: Optional[str] = NameOption,
    output_dir: Optional[str] = OutputOption,
    force: bool = ForceOption,
) -> None:
    """Quantize an exported classifier to int8 (dynamic and static; ONNX Runtime and/or Intel Neural Compressor), within an accuracy tolerance."""
    from edgepress.recipe.loading import load_recipe

    flags = {
        "task": task,
        "stages": ["quantize"], "name": name if name is not None else (None if recipe else "quantize"), "output_dir": output_dir,
        "model.name_or_path": model, "data.source": data,
        "data.text_column": text_column, "data.text_pair_column": text_pair_column, "data.label_column": label_column,
        "quantize.backend": backend, "quantize.target": target, "quantize.dynamic": dynamic, "quantize.static": static,
        "quantize.calibration_method": calibration_method, "quantize.calibration_samples": calibration_samples,
        "quantize.format": quant_format, "quantize.per_channel": per_channel, "quantize.tolerance": tolerance,
        "quantize.tune": tune, "quantize.select": select, "quantize.exclude_op_types": exclude_op_type or None,
        "quantize.exclude_nodes": exclude_node or None, "quantize.max_seq_length": max_seq_length,
        "quantize.with_tokenizer": with_tokenizer,
    }  # fmt: skip
    execute(load_recipe(recipe, overrides, given(flags)), force, origin_of(recipe, "quantize"))
