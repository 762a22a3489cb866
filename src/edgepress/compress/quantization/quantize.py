"""Stage ``quantize``: int8 models from the exported fp32 ONNX model, with ONNX Runtime's quantizer.

Dynamic quantization starts from the fused graph (``model_optimized.onnx``), where ONNX Runtime
has integer kernels for the fused ops (QAttention, QEmbedLayerNormalization). Static quantization
starts from the plain graph (``model.onnx``): every MatMul gets int8 inputs there, which the fused
Attention op would hide. Each variant must keep the validation accuracy (entity F1 for token
classification) within ``tolerance`` of the
fp32 model; if the configured settings miss it and ``tune`` is on, other settings are tried, then
the most sensitive nodes are kept in fp32 until one passes (see ``settings_to_try``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepress.compress.quantization.configs import QuantConfig, first_config, resolve_target, settings_to_try
from edgepress.compress.quantization.search import Calibration, CalibrationError, Reference, judge, quantize, sensitivity
from edgepress.errors import ModelError, StageError
from edgepress.export import bundle
from edgepress.export.runtime import load_onnx, onnx_logits, op_counts, open_session
from edgepress.metrics import agreement, predictions_of, score, score_name, scores_of
from edgepress.models import check_folder_labels, resolve_source
from edgepress.running.runs import read_manifest

if TYPE_CHECKING:
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)

SOURCES = {"dynamic": ("model_optimized.onnx", "model.onnx"), "static": ("model.onnx",)}
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QAttention",
             "QEmbedLayerNormalization", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat")  # fmt: skip
KEPT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
              "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")  # fmt: skip


def run_stage(ctx: "StageContext") -> dict[str, Any]:
    cfg = ctx.recipe.quantize
    folder = Path(resolve_source(ctx.input_model))
    check_folder_labels(folder, ctx.data.labels, "quantization is judged by accuracy on the data")
    if cfg.web:  # before any work: the folder needs the export's graph and the browser runtimes
        from edgepress.web.folder import check_web_source

        check_web_source(folder)
    ort = _onnxruntime(ctx, folder) if "onnxruntime" in cfg.backend else {"variants": {}}
    if "neural-compressor" in cfg.backend:
        ort["variants"].update(_neural_compressor(ctx, folder))
    if "openvino" in cfg.backend:
        from edgepress.compress.quantization import openvino_nncf

        ort["variants"].update(openvino_nncf.variants(ctx, folder, KEPT_FILES, calibration_texts(ctx)))
    first = next(iter(ort["variants"].values()))
    if cfg.web:
        from edgepress.web.folder import write_for_stage

        ort["web"] = write_for_stage(ctx, folder, {"fp32": folder / "model.onnx", "q8": ctx.out_dir / "model_int8_dynamic.onnx"})
    return {**ort, "backend": cfg.backend, "evaluated_file": first["file"], "validation": first["validation"], "test": first["test"]}


def _neural_compressor(ctx: "StageContext", folder: Path) -> dict[str, Any]:
    """INC int8 PyTorch variants (inc.py) of the torch model: the input itself, or the one the export stage read."""
    from edgepress.compress.quantization import inc
    from edgepress.models import load_trained

    source = torch_source(folder)
    model, tokenizer = load_trained(ctx.recipe.model.model_copy(update={"name_or_path": str(source)}), task=ctx.data.task)
    variants, calibration = {}, calibration_texts(ctx)
    for mode in [m for m in ("dynamic", "static") if getattr(ctx.recipe.quantize, m)]:
        variants[f"inc-{mode}"] = inc.quantize_variant(ctx, mode, model, tokenizer, ctx.out_dir, calibration)
        _log_variant(f"neural-compressor {mode}", variants[f"inc-{mode}"])
    return variants


def torch_source(folder: Path) -> Path:
    """The torch model folder behind ``folder``: itself when it holds one, else the export stage's input."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    recorded = (read_manifest(folder) or {}).get("input_model")
    if not recorded or not Path(recorded).is_dir():
        raise ModelError(
            f"quantize.backend neural-compressor quantizes a torch model, and {folder} neither holds one nor records the one it "
            "was exported from (edgepress.json); give the torch model folder (e.g. the prune stage's) or an export folder edgepress wrote"
        )
    return Path(recorded)


def _onnxruntime(ctx: "StageContext", folder: Path) -> dict[str, Any]:
    """int8 ONNX variants with ONNX Runtime's quantizer."""
    from transformers import AutoTokenizer

    cfg = ctx.recipe.quantize
    tokenizer = AutoTokenizer.from_pretrained(folder)
    target, preset = resolve_target(cfg.target)
    for name in KEPT_FILES:  # so that ORTModelForSequenceClassification opens the folder
        if (folder / name).is_file():
            shutil.copy(folder / name, ctx.out_dir / name)
    fp32_file = _source(folder, "dynamic")
    fp32 = open_session(fp32_file)
    val_rows = ctx.data.validation.to_dict()
    reference = _reference(ctx.data, val_rows, onnx_logits(fp32, tokenizer, val_rows, cfg.max_seq_length, cfg.scoring_batch_size))
    test_rows = ctx.data.test.to_dict()
    fp32_test = predictions_of(onnx_logits(fp32, tokenizer, test_rows, cfg.max_seq_length, cfg.scoring_batch_size))
    calibration = Calibration(tokenizer, calibration_texts(ctx), _padded_length(folder, cfg.max_seq_length), cfg.calibration_padding) if cfg.static else None
    variants = {}
    with tempfile.TemporaryDirectory(dir=ctx.out_dir) as scratch:
        for mode in [m for m in ("dynamic", "static") if getattr(cfg, m)]:
            source = _source(folder, mode)
            config, trials, kept = _search(mode, _copied(source, Path(scratch)), Path(scratch), tokenizer, reference, calibration, ctx, preset)
            final = ctx.out_dir / f"model_int8_{mode}.onnx"
            shutil.move(Path(scratch) / f"{mode}-kept.onnx", final)
            variants[mode] = _describe(final, source, config, trials, kept, tokenizer, test_rows, fp32_test, ctx)
            _log_variant(mode, variants[mode])
            if cfg.with_tokenizer:  # the int8 model's own outputs are the reference: no tolerance beyond float noise
                variants[mode]["with_tokenizer"] = bundle.write_for_stage(final, tokenizer, ctx.data, cfg.max_seq_length, 1e-4)
    return {
        "target": target, "preset": asdict(preset), "source_folder": str(folder),
        "scored_at_batch_size": cfg.scoring_batch_size,
        "fp32": {"file": fp32_file.name, "validation": reference.validation, "test": scores_of(ctx.data, "test", fp32_test)},
        "variants": variants,
    }  # fmt: skip


def _search(mode, source, work, tokenizer, reference, calibration, ctx, preset) -> tuple[QuantConfig, list[dict], dict]:
    """Try settings until one keeps the accuracy (``select: most_accurate``: try them all and keep the
    best); else keep the most sensitive nodes in fp32, 1, 2, 4, ... of them. Returns the kept
    configuration, every trial, and the kept trial."""
    cfg = ctx.recipe.quantize
    first = first_config(mode, cfg, preset)
    trials: list[dict] = []
    kept: dict[str, Any] = {}

    def attempt(config: QuantConfig) -> bool:
        path = work / f"{mode}-trial.onnx"
        try:
            quantize(config, source, path, calibration, _cache(work, config))
        except CalibrationError as exc:
            trials.append({"config": config.to_json(), "described": config.describe(), "error": str(exc), "val_score": None,
                           "collapsed": False, "within_tolerance": False})  # fmt: skip
            log.warning("int8 %s, %s: %s", mode, config.describe(), exc)
            return False
        trial = {"config": config.to_json(), "described": config.describe(), **judge(
            path, tokenizer, reference, cfg.max_seq_length, cfg.scoring_batch_size, cfg.tolerance)}  # fmt: skip
        trials.append(trial)
        log.info("int8 %s, %s: val %s %.2f%% (fp32 %.2f%%)%s", mode, config.describe(), score_name(reference.validation),
                 100 * trial["val_score"], 100 * reference.accuracy, " COLLAPSED" if trial["collapsed"] else "")  # fmt: skip
        if trial["within_tolerance"] and (not kept or _better(trial, kept["trial"])):
            shutil.move(path, work / f"{mode}-kept.onnx")
            kept.update(trial=trial, config=config)
        return trial["within_tolerance"]

    settings = settings_to_try(first) if cfg.tune else [first]
    for config in settings[: cfg.max_trials]:
        if attempt(config) and cfg.select == "first":
            break
    if cfg.tune and not kept and len(trials) < cfg.max_trials:
        best = max((t for t in trials if t["val_score"] is not None), key=lambda t: t["val_score"])
        base = next(c for c in settings if c.to_json() == best["config"])
        ranked = [name for name, _ in sensitivity(base, source, work, tokenizer, reference, cfg.max_seq_length, calibration, _cache(work, base))]
        count = 1
        while len(trials) < cfg.max_trials and count <= len(ranked):
            if attempt(replace(base, excluded=base.excluded + tuple(ranked[:count]))):
                break
            count *= 2
    if not kept:
        raise StageError(_failure(mode, trials, reference, cfg.tolerance, cfg.tune))
    for trial in trials:
        trial["kept"] = trial is kept["trial"]
    return kept["config"], trials, kept["trial"]


def _better(trial: dict, than: dict) -> bool:
    """More accurate on validation; at equal accuracy, faster at batch 1 (the search's indicative latency)."""
    return (trial["val_score"], -trial["latency_ms"]) > (than["val_score"], -than["latency_ms"])


def _failure(mode: str, trials: list[dict], reference: Reference, tolerance: float, tuned: bool) -> str:
    tried = "; ".join(
        f"{t['described']}: " + (
            "calibration failed" if t["val_score"] is None else f"{100 * t['val_score']:.2f}%{' (collapsed)' if t['collapsed'] else ''}"
        ) for t in trials
    )  # fmt: skip
    hint = "raise quantize.tolerance, exclude op types (quantize.exclude_op_types), or turn this variant off"
    if not tuned:
        hint = "turn on quantize.tune to search other settings, or " + hint
    return (
        f"no int8 {mode} model kept validation {score_name(reference.validation)} within {100 * tolerance:g}% (relative) of fp32's "
        f"{100 * reference.accuracy:.2f}%; tried {tried}; {hint}"
    )


def _describe(final: Path, source: Path, config, trials, kept, tokenizer, test_rows, fp32_test, ctx) -> dict[str, Any]:
    cfg = ctx.recipe.quantize
    session = open_session(final)
    test_predictions = predictions_of(onnx_logits(session, tokenizer, test_rows, cfg.max_seq_length, cfg.scoring_batch_size))
    ops = op_counts(load_onnx(final))
    return {
        "file": final.name, "source": source.name, "config": config.to_json(), "described": config.describe(),
        "validation": kept["validation"],
        "test": scores_of(ctx.data, "test", test_predictions),
        "test_agreement_with_fp32": agreement(test_predictions, fp32_test),
        "validation_agreement_with_fp32": kept["agreement"],
        "bytes": final.stat().st_size, "size_ratio": round(final.stat().st_size / source.stat().st_size, 4),
        "quantized_ops": {op: n for op, n in ops.items() if op in QUANT_OPS},
        "latency_ms_batch1_indicative": kept["latency_ms"], "trials": trials,
    }  # fmt: skip


def _log_variant(mode: str, variant: dict) -> None:
    log.info(
        "int8 %s kept (%s): test %s %.2f%%, agrees with fp32 on %.1f%% of test, %.2fx the fp32 size",
        mode, variant["described"], score_name(variant["test"]), 100 * score(variant["test"]), 100 * variant["test_agreement_with_fp32"],
        variant["size_ratio"],
    )  # fmt: skip


def _copied(source: Path, scratch: Path) -> Path:
    """The input graph, copied into this stage's scratch folder: ONNX Runtime's quantizer writes
    ``<model>-inferred.onnx`` beside the file it reads, which would change the export stage's folder
    (and stay there if the run is killed)."""
    copy = scratch / f"source-{source.name}"
    if not copy.is_file():
        shutil.copy2(source, copy)
    return copy


def _source(folder: Path, mode: str) -> Path:
    for name in SOURCES[mode]:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(
        f"{folder} has no {' or '.join(SOURCES[mode])}; quantize reads the folder of the export stage "
        "(run stages: [..., export, quantize], or edgepress export first)"
    )


def _padded_length(folder: Path, requested: int) -> int:
    """Calibration texts are truncated (or padded) to at most this length, which must fit the model's position table."""
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    limit = config.get("max_position_embeddings") or requested
    if requested > limit:
        log.info("calibration pads to %d tokens, the model's position limit (quantize.max_seq_length is %d)", limit, requested)
    return min(requested, limit)


def _reference(data, rows: dict, logits: np.ndarray) -> Reference:
    predictions = predictions_of(logits)
    labels = rows["label"]
    common = np.bincount(np.concatenate([np.ravel(x) for x in labels])).argmax()
    constant = np.where(predictions >= 0, common, -1)  # the most common label everywhere
    return Reference(data, rows, predictions, logits, scores_of(data, "validation", predictions), score(scores_of(data, "validation", constant)))


def calibration_texts(ctx: "StageContext") -> dict[str, list]:
    train = ctx.data.train.shuffle(seed=ctx.recipe.seed)
    sample = train.select(range(min(ctx.recipe.quantize.calibration_samples, len(train))))
    return {k: sample[k] for k in ("text", "text_pair") if k in sample.column_names}


def _cache(work: Path, config: QuantConfig) -> Path | None:
    """Calibrated ranges depend only on the graph and the method: later trials reuse them."""
    return work / f"calibration-{config.calibration_method}.json" if config.mode == "static" else None
