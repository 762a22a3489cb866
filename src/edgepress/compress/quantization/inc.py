"""int8 PyTorch models with Intel Neural Compressor 3.x (``quantize.backend: neural-compressor``).

INC's PyTorch API (``neural_compressor.torch.quantization``, from the ``neural-compressor-pt``
package) quantizes a model captured with ``torch.export`` (its PT2E path: X86InductorQuantizer
underneath): ``StaticQuantConfig`` calibrates activation ranges on training texts,
``DynamicQuantConfig`` quantizes activations at run time. ``autotune`` tries the configurations in
order and keeps the first whose validation score (accuracy; entity F1 for token classification) is
within ``quantize.tolerance`` (relative) of the fp32 model's; edgepress checks the kept model again
and fails the stage if it is not. What does not run on torch 2.13 CPU without IPEX: INC's IPEX
static path and SmoothQuant (both import ``intel_extension_for_pytorch``).

The artifact is INC's own save format (``quantized_weight.pt``: a ``torch.export`` program, and
``qconfig.json``) with the model's config.json and tokenizer beside it; it reloads with
``neural_compressor.torch.quantization.load(folder, original_model=fp32_model)``. The kernels are
int8 only once compiled: ``torch.compile`` (Inductor) is how it is run and timed; uncompiled it runs
reference (quantize, dequantize, fp32) ops.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgepress.data.features import encode, text_slice
from edgepress.errors import StageError
from edgepress.metrics import agreement, per_row, predictions_of, score, score_name, scores_of
from edgepress.tasks.tagging import is_words, stack

if TYPE_CHECKING:
    from edgepress.running.pipeline import StageContext

log = logging.getLogger(__name__)

WEIGHTS, QCONFIG = "quantized_weight.pt", "qconfig.json"
MODES = {"static": "StaticQuantConfig", "dynamic": "DynamicQuantConfig"}


def is_inc_folder(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() and (folder / QCONFIG).is_file()


def quiet() -> None:
    """INC's logger announces every step at INFO and sets its level when first imported (after the
    CLI's logging set-up): keep its warnings only, unless edgepress itself logs at debug level."""
    import neural_compressor.common.utils.logger  # noqa: F401  (creates the logger)

    if not logging.getLogger("edgepress").isEnabledFor(logging.DEBUG):
        logging.getLogger("neural_compressor").setLevel(logging.WARNING)


class Inputs:
    """The model's forward arguments in its own order (``torch.export`` takes them positionally).
    A saved int8 model keeps the fp32 model's argument names, so either one gives the order."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        accepted = inspect.signature(model.forward).parameters
        probe = tokenizer(["a b"], return_tensors="pt")
        self.names = [n for n in accepted if n in probe]

    def of(self, rows: dict[str, list], **kwargs: Any) -> tuple[Any, tuple]:
        encoded = encode(self.tokenizer, rows, self.max_length, padding=True, return_tensors="pt", **kwargs)
        return encoded, tuple(encoded[n] for n in self.names)


def logits_of(model: Callable, inputs: Inputs, rows: dict[str, list], batch_size: int) -> np.ndarray:
    """Logits (word logits for tagged sentences) of a quantized or exported model, batch by batch."""
    import torch

    chunks: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(rows["text"]), batch_size):
            batch = text_slice(rows, start, start + batch_size)
            encoded, args = inputs.of(batch)
            chunks.extend(per_row(encoded, first_output(model(*args)).float().numpy(), batch))
    return stack(chunks) if is_words(rows) else np.concatenate(chunks)


def first_output(output: Any) -> Any:
    """The logits: a quantized model returns a plain tuple, the fp32 one a ModelOutput."""
    return output[0] if isinstance(output, (tuple, list)) else output.logits


def export_for_quantization(model: Any, inputs: Inputs, rows: dict[str, list]) -> Any:
    """The model captured by ``torch.export`` with a dynamic batch and sequence axis. Its outputs are
    a plain tuple (``return_dict=False``): a saved program whose outputs are Transformers classes
    would not load where those classes are not imported first."""
    import torch
    from neural_compressor.torch.export import export

    model = copy.deepcopy(model)
    model.config.return_dict = False
    _, example = inputs.of(text_slice(rows, 0, 2))
    batch, sequence = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=inputs.max_length)
    try:
        exported = export(model, example_inputs=example, dynamic_shapes=tuple({0: batch, 1: sequence} for _ in example))
    except Exception as exc:  # torch.export raises many types for graphs it cannot capture
        raise StageError(f"torch.export cannot capture {type(model).__name__} for neural-compressor ({str(exc).splitlines()[0][:200]}); use quantize.backend: onnxruntime") from exc
    if exported is None:
        raise StageError(f"torch.export cannot capture {type(model).__name__} for neural-compressor; use quantize.backend: onnxruntime")
    return exported, example


def candidate_configs(mode: str, tune: bool) -> list[Any]:
    """What autotune tries, in order: per-channel weights first (usually the more accurate), then per-tensor."""
    from neural_compressor.torch import quantization as inc

    config = getattr(inc, MODES[mode])
    granularities = ("per_channel", "per_tensor") if tune else ("per_channel",)
    return [config(w_granularity=g) for g in granularities]


def quantize_variant(ctx: "StageContext", mode: str, model: Any, tokenizer: Any, out_dir: Path, calibration: dict[str, list]) -> dict[str, Any]:
    """One INC int8 variant of the torch model: tuned, checked against the tolerance, saved, reloaded."""
    from neural_compressor.torch.quantization import TuningConfig, autotune

    quiet()
    cfg, data = ctx.recipe.quantize, ctx.data
    inputs = Inputs(model, tokenizer, cfg.max_seq_length)
    validation = data.validation.to_dict()
    exported, example = export_for_quantization(model, inputs, calibration)
    trials: list[dict[str, Any]] = []

    def scored(candidate: Any) -> dict[str, float]:
        return scores_of(data, "validation", predictions_of(logits_of(candidate, inputs, validation, cfg.scoring_batch_size)))

    def evaluate(candidate: Any) -> float:
        trials.append({"validation": scored(candidate)})
        return score(trials[-1]["validation"])

    def calibrate(prepared: Any) -> None:
        for start in range(0, len(calibration["text"]), 8):
            prepared(*inputs.of(text_slice(calibration, start, start + 8))[1])

    configs = candidate_configs(mode, cfg.tune)[: cfg.max_trials]
    tuning = TuningConfig(config_set=configs, tolerable_loss=cfg.tolerance, max_trials=len(configs))
    quantized = autotune(exported, tuning, eval_fn=evaluate, run_fn=calibrate, example_inputs=example)
    trials = _label_trials(trials, configs)
    reference, kept = trials[0]["validation"], scored(quantized)  # autotune scores the fp32 model first
    _check_tolerance(mode, kept, reference, cfg.tolerance, trials)
    folder = out_dir / f"inc_int8_{mode}"
    save(quantized, example, folder, tokenizer, model)
    return _describe(folder, quantized, model, inputs, ctx, reference, kept, trials)


def _label_trials(trials: list[dict], configs: list[Any]) -> list[dict]:
    """autotune evaluates the fp32 model first, then each configuration in order."""
    baseline, rest = trials[0], trials[1:]
    labelled = [{"config": "fp32 (baseline)", **baseline}]
    for config, trial in zip(configs, rest):
        labelled.append({"config": {k: v for k, v in config.to_dict().items() if not k.startswith("_")}, **trial})
    return labelled


def _check_tolerance(mode: str, kept: dict, reference: dict, tolerance: float, trials: list[dict]) -> None:
    drop = (score(reference) - score(kept)) / score(reference) if score(reference) else 0.0
    if drop > tolerance:
        name = score_name(reference)
        tried = "; ".join(f"{t['config'].get('w_granularity', '?')} weights: {100 * score(t['validation']):.2f}%" for t in trials[1:])
        raise StageError(
            f"no neural-compressor int8 {mode} model kept validation {name} within {100 * tolerance:g}% (relative) of fp32's "
            f"{100 * score(reference):.2f}%; tried {tried}; raise quantize.tolerance, or use quantize.backend: onnxruntime"
        )


def save(quantized: Any, example: tuple, folder: Path, tokenizer: Any, model: Any) -> None:
    """INC's save format, with config.json and the tokenizer beside it, so the folder stands alone."""
    if folder.exists():
        shutil.rmtree(folder)
    quantized.save(example_inputs=example, output_dir=str(folder))
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load(folder: Path) -> Any:
    """The saved int8 model, as INC documents (a PT2E model needs no ``original_model``)."""
    from neural_compressor.torch.quantization import load as inc_load

    quiet()
    return inc_load(str(folder))


def compiled(model: Any) -> Any:
    """``torch.compile`` with Inductor's weight freezing, as INC's PT2E examples run it: the
    quantize-dequantize pairs become int8 kernels, and the weights are quantized once, not per call."""
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = True
    return torch.compile(model, dynamic=True)


def parameter_count(folder: Path) -> int:
    return sum(t.numel() for t in load(folder).state_dict().values())


def evaluate_folder(folder: Path, data: Any, max_length: int, splits: tuple[str, ...], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Metrics of a saved INC model (uncompiled: the same numbers, without the compile time)."""
    from transformers import AutoTokenizer

    from edgepress.metrics import evaluate_splits

    model = load(folder)
    inputs = Inputs(model, AutoTokenizer.from_pretrained(folder), max_length)
    return evaluate_splits(data, splits, lambda rows: logits_of(model, inputs, rows, batch_size))


def _describe(folder, quantized, model, inputs, ctx, reference, kept, trials) -> dict[str, Any]:
    cfg, data = ctx.recipe.quantize, ctx.data
    test_rows = data.test.to_dict()
    reloaded = load(folder)
    probe = text_slice(test_rows, 0, 8)
    diff = float(np.nanmax(np.abs(logits_of(reloaded, inputs, probe, 8) - logits_of(quantized, inputs, probe, 8))))
    if diff > 1e-4:
        raise StageError(f"the saved neural-compressor model does not reload into the same model (max logit difference {diff:.2e}); this is a bug, please report it")
    fp32_test = predictions_of(logits_of(model, inputs, test_rows, cfg.scoring_batch_size))
    test = predictions_of(logits_of(reloaded, inputs, test_rows, cfg.scoring_batch_size))
    size = (folder / WEIGHTS).stat().st_size
    fp32_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "backend": "neural-compressor", "folder": folder.name, "file": f"{folder.name}/{WEIGHTS}",
        "described": _described(folder), "qconfig": json.loads((folder / QCONFIG).read_text()),
        "fp32_validation": reference, "validation": kept,
        "test": scores_of(data, "test", test), "fp32_test": scores_of(data, "test", fp32_test),
        "test_agreement_with_fp32": agreement(test, fp32_test), "bytes": size, "size_ratio": round(size / fp32_bytes, 4),
        "reload_max_abs_diff": diff, "trials": trials,
    }  # fmt: skip


def _described(folder: Path) -> str:
    """The kept configuration in a few words, from the qconfig.json INC saved."""
    saved = json.loads((folder / QCONFIG).read_text())
    name, settings = next(iter(saved.items()))
    return f"{name}, {settings.get('w_granularity', '?')} weights, {settings.get('act_algo', '?')} activations"
