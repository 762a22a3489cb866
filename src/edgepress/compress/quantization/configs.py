"""Quantization settings: hardware presets, the CPU this runs on, and the configurations tried.

The presets follow ONNX Runtime's guidance for CPU inference (and optimum's AutoQuantizationConfig):
int8 matrix products on x86 without VNNI go through ``vpmaddubsw``, which adds pairs of u8 x s8
products into int16 and can saturate; 7-bit weights (``reduce_range``) keep those sums in range.
VNNI's ``vpdpbusd`` accumulates into int32, so full-range weights are safe there. ARM's int8 dot
product kernels favour symmetric int8 activations.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgepress.recipe.deploy import QuantizeSection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    reason: str


PRESETS = {
    "avx2": Preset("uint8", "int8", True, False, "no VNNI: u8 x s8 pairs sum into int16 and can saturate, so weights use 7 bits"),
    "avx512": Preset("uint8", "int8", True, False, "AVX-512 without VNNI has the same int16 saturation as AVX2"),
    "avx512_vnni": Preset("uint8", "int8", False, False, "VNNI accumulates in int32: full-range weights are safe"),
    "arm64": Preset("int8", "int8", False, False, "ARM int8 dot-product kernels favour symmetric int8 activations"),
}


@dataclass(frozen=True)
class QuantConfig:
    """One configuration to try; ``excluded`` are node names left in fp32."""

    mode: str  # "dynamic" or "static"
    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    calibration_method: str
    format: str
    excluded: tuple[str, ...] = ()
    excluded_op_types: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [self.mode, f"{'S8' if self.activation_type == 'int8' else 'U8'}{'S8' if self.weight_type == 'int8' else 'U8'}"]
        parts += ["per-channel" if self.per_channel else "per-tensor", "reduce_range" if self.reduce_range else "full range"]
        if self.mode == "static":
            parts += [self.calibration_method, self.format]
        if self.excluded:
            parts.append(f"{len(self.excluded)} node(s) kept fp32")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {**asdict(self), "excluded": list(self.excluded), "excluded_op_types": list(self.excluded_op_types)}


def cpu_target() -> tuple[str, set[str]]:
    """The preset that fits this machine's CPU, and the instruction-set flags it was chosen from."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64", {machine}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "avx2", set()
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "avx512_vnni", flags
    if "avx512f" in flags:
        return "avx512", flags
    return "avx2", flags


def resolve_target(requested: str) -> tuple[str, Preset]:
    """The preset for ``requested`` (``auto``: this CPU), with a warning when it does not fit this CPU."""
    here, _ = cpu_target()
    target = here if requested == "auto" else requested
    if target != here:
        log.warning(
            "quantize.target is %s but this CPU is %s: the accuracy and speed measured here are those of this CPU's "
            "kernels, not the target's; check them on the target (edgepress bench)",
            target,
            here,
        )
    return target, PRESETS[target]


def first_config(mode: str, cfg: "QuantizeSection", preset: Preset) -> QuantConfig:
    """The recipe's settings, with the preset filling what the recipe leaves open."""

    def pick(value, default):
        return default if value is None else value

    activation = "uint8" if mode == "dynamic" else pick(cfg.activation_type, preset.activation_type)  # ORT's dynamic path is u8
    return QuantConfig(
        mode=mode,
        activation_type=activation,
        weight_type=pick(cfg.weight_type, preset.weight_type),
        reduce_range=pick(cfg.reduce_range, preset.reduce_range),
        per_channel=pick(cfg.per_channel, preset.per_channel),
        calibration_method=cfg.calibration_method,
        format=cfg.format,
        excluded=tuple(cfg.exclude_nodes),
        excluded_op_types=tuple(cfg.exclude_op_types),
    )


def settings_to_try(first: QuantConfig) -> list[QuantConfig]:
    """Settings that change no node's precision, cheapest first: per-channel scales, the other
    calibration methods (static), then the other weight range. Excluding nodes comes after these."""
    tried = [first, replace(first, per_channel=not first.per_channel)]
    if first.mode == "static":
        tried += [replace(first, calibration_method=m) for m in ("percentile", "entropy", "minmax") if m != first.calibration_method]
    tried.append(replace(first, reduce_range=not first.reduce_range))
    return list(dict.fromkeys(tried))
