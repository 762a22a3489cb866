"""The variants made from the fused graph (see ``fusion``): fp16 and the ORT mobile format. Each is
ONNX Runtime's own tool (its fp16 converter and ORT-format tool); edgepress only chooses their
settings and records what they did."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgepress.errors import StageError
from edgepress.export.runtime import quiet_onnxruntime


def write_fp16(source: Path, target: Path) -> None:
    """fp16 weights and math with fp32 inputs and outputs (``keep_io_types``), for GPU targets.

    Ops that are unstable in fp16 (LayerNorm statistics, Softmax sums) are kept fp32 by ONNX Runtime's
    converter; on CPU, ONNX Runtime inserts casts where it has no fp16 kernel, so it still runs."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    optimized = OnnxModel(onnx.load(str(source)))
    with quiet_onnxruntime():
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(target))


def write_ort_format(source: Path, folder: Path) -> list[Path]:
    """``<name>.ort`` and ``<name>.required_operators.config`` next to ``source``, with ONNX Runtime's
    conversion tool. The config is what a reduced-size (mobile) ONNX Runtime build is compiled against.
    Target ``arm`` keeps x86-only layout rewrites out of the file, so it runs on phones and boards."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        work = Path(scratch)
        shutil.copy(source, work / source.name)
        try:
            with quiet_onnxruntime():
                convert_onnx_models_to_ort(
                    work / source.name, output_dir=work / "out",
                    optimization_styles=[OptimizationStyle.Fixed], target_platform="arm",
                )  # fmt: skip
        except Exception as exc:
            raise StageError(
                f"ONNX Runtime could not convert {source.name} to the ORT mobile format ({exc}); set export.mobile: false to skip it"
            ) from exc
        written = []
        for produced in sorted((work / "out").iterdir()):
            shutil.move(str(produced), folder / produced.name)
            written.append(folder / produced.name)
    return written
