"""What a benchmark measures: the artifacts of a run folder, and models named on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgepress.compress.quantization.inc import is_inc_folder
from edgepress.errors import ModelError, RecipeError
from edgepress.export.bundle import SUFFIX, bundle_name
from edgepress.export.runtime import load_onnx
from edgepress.running.runs import read_manifest

TORCH_STAGES = ("finetune", "distill", "prune")
# fp16 graphs are for GPUs (the CPU provider runs most fp16 ops by casting), .ort files equal their .onnx
_PLAIN = {"export": ("model.onnx", "model_optimized.onnx"), "quantize": ("model_int8_dynamic.onnx", "model_int8_static.onnx")}
_BUNDLED = {"export": ("model_optimized.onnx",), "quantize": ("model_int8_dynamic.onnx", "model_int8_static.onnx")}
ONNX_FILES = {stage: files + tuple(bundle_name(f) for f in _BUNDLED[stage]) for stage, files in _PLAIN.items()}


@dataclass
class Artifact:
    name: str
    # "torch" (a Transformers folder), "onnx" (a file), "inc" (an INC int8 PyTorch folder, compress/quantization/inc.py)
    # or "openvino" (an IR .xml file, export/ir.py); "web": an ONNX file of a web-ready folder, timed
    # through transformers.js's pipeline on the browser target (bench/browser.py)
    kind: str
    path: Path
    folder: Path  # holds the tokenizer (and config)
    test: dict[str, float] = field(default_factory=dict)  # accuracy / f1_macro on the test split, as its stage measured it
    test_source: Optional[str] = None
    precision: Optional[str] = None  # openvino: the inference precision asked for (f32, or bf16 on CPUs that have it)

    @property
    def bundle(self) -> bool:
        """An ONNX file with its tokenizer inside: raw text in (export/bundle.py)."""
        return self.kind == "onnx" and self.path.name.endswith(SUFFIX)

    def bytes(self) -> int:
        if self.kind in ("onnx", "web"):
            return self.path.stat().st_size
        if self.kind == "openvino":
            from edgepress.export.ir import file_bytes

            return file_bytes(self.path)
        if self.kind == "inc":
            from edgepress.compress.quantization.inc import WEIGHTS

            return (self.path / WEIGHTS).stat().st_size
        return sum(p.stat().st_size for p in self.path.glob("*.safetensors"))


def run_artifacts(run: Path, include_torch: bool = True) -> list[Artifact]:
    """Every artifact of a run folder, in pipeline order, with the test metrics its stage recorded.
    Only the stage folders of the run's last recipe (its recipe.yaml) count: folders left by an
    earlier recipe with other stages are stale."""
    stage = (read_manifest(run) or {}).get("stage")
    if stage:
        raise RecipeError(
            f"{run} is the folder of one {stage} stage, not a run folder; pass the run folder ({run.parent}) to --run, "
            "or measure its model files one by one with --model NAME=PATH"
        )
    found = []
    for folder in _stage_folders(run):
        manifest = read_manifest(folder) or {}
        stage, metrics = manifest.get("stage"), manifest.get("metrics") or {}
        if stage in TORCH_STAGES and include_torch:
            found.append(Artifact(f"{folder.name} torch", "torch", folder, folder, metrics.get("test") or {}, stage))
        for name in ONNX_FILES.get(stage, ()):
            if (folder / name).is_file():
                found.append(Artifact(f"{folder.name}/{name}", "onnx", folder / name, folder, *_onnx_test(stage, name, metrics)))
        for variant in (metrics.get("variants") or {}).values() if stage == "quantize" else ():
            if variant.get("backend") == "neural-compressor" and (folder / variant["folder"]).is_dir():
                path = folder / variant["folder"]
                found.append(Artifact(f"{folder.name}/{variant['folder']} torch", "inc", path, path, variant.get("test") or {}, "quantize"))
        if stage == "quantize":
            found.extend(_openvino_artifacts(folder, metrics))
    if not found:
        raise ModelError(f"{run} holds no stage folders with artifacts (NN-stage/ with edgepress.json); run a recipe first")
    return found


def _openvino_artifacts(folder: Path, metrics: dict[str, Any]) -> list[Artifact]:
    """The quantize stage's OpenVINO files: the fp32 IR in f32 (and in bf16 where the stage scored
    it), and the NNCF int8 IR, each with the test metrics the stage measured."""
    from edgepress.export.ir import FP32_NAME

    variants = {k: v for k, v in (metrics.get("variants") or {}).items() if v.get("backend") == "openvino"}
    if not variants:
        return []
    ir_folder = folder / next(iter(variants.values()))["folder"]
    fp32_test = next(iter(variants.values())).get("fp32_test") or {}
    found = [Artifact(f"{folder.name}/{ir_folder.name}/{FP32_NAME}", "openvino", ir_folder / FP32_NAME, ir_folder, fp32_test, "quantize", "f32")]
    for name, variant in variants.items():
        precision = "bf16" if name == "openvino-bf16" else "f32"
        label = f"{folder.name}/{variant['file']}" + (" bf16" if precision == "bf16" else "")
        found.append(Artifact(label, "openvino", folder / variant["file"], ir_folder, variant.get("test") or {}, "quantize", precision))
    return [a for a in found if a.path.is_file()]


def training_curves(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(stage folder name, its training runs' curves) for each stage of the run that trained."""
    from edgepress.compress.training.monitor import read_curves

    return [(folder.name, runs) for folder in _stage_folders(run) if (runs := read_curves(folder))]


def _stage_folders(run: Path) -> list[Path]:
    import yaml

    folders = sorted(p for p in run.glob("[0-9][0-9]-*") if p.is_dir())
    recipe = run / "recipe.yaml"
    if not recipe.is_file():
        return folders
    stages = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("stages") or []
    current = {f"{i:02d}-{name}" for i, name in enumerate(stages, start=1)}
    return [f for f in folders if f.name in current]


def _onnx_test(stage: str, name: str, metrics: dict[str, Any]) -> tuple[dict, str]:
    if name.endswith(SUFFIX):  # its stage checked it gives the same predictions as the model without the tokenizer
        test, source = _onnx_test(stage, name.replace(SUFFIX, ".onnx"), metrics)
        return test, f"{source} (the same model without the tokenizer)"
    if stage == "quantize":
        variant = next((v for v in (metrics.get("variants") or {}).values() if v.get("file") == name), {})
        return variant.get("test") or {}, "quantize"
    # export measures the fused graph; parity ties the plain graph to it
    return metrics.get("test") or {}, "export"


def check_unique_names(artifacts: list[Artifact]) -> None:
    """Names key every row of bench.json and the gate: two artifacts under one name would share them."""
    seen: dict[str, Artifact] = {}
    for artifact in artifacts:
        if artifact.name in seen:
            raise RecipeError(
                f"two artifacts are named {artifact.name!r} ({seen[artifact.name].path} and {artifact.path}); "
                "give each --model its own NAME (--model NAME=PATH)"
            )
        seen[artifact.name] = artifact


def named_models(items: list[str]) -> list[Artifact]:
    """``NAME=PATH`` items (or bare paths): ONNX files, or folders holding one model.onnx or a torch model."""
    found = []
    for item in items:
        name, sep, path_text = item.partition("=")
        path = Path(path_text if sep else item).expanduser()
        name = name if sep else path.name
        if not path.exists():
            raise ModelError(f"--model {item}: {path} does not exist; give NAME=PATH of an ONNX file or a model folder")
        if path.is_file():
            if path.suffix == ".xml":  # OpenVINO IR, run in f32
                from edgepress.export.ir import read

                read(path)
                found.append(Artifact(name, "openvino", path, path.parent, precision="f32"))
                continue
            if path.suffix == ".onnx":
                load_onnx(path)  # a file that is not ONNX: one line naming it, before anything is timed
            found.append(Artifact(name, "onnx", path, path.parent))
        elif (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            found.append(Artifact(name, "torch", path, path))
        elif is_inc_folder(path):
            found.append(Artifact(name, "inc", path, path))
        elif len(onnx := sorted(path.glob("*.onnx"))) == 1:
            found.append(Artifact(name, "onnx", onnx[0], path))
        else:
            raise ModelError(f"--model {item}: {path} is neither an ONNX file, an OpenVINO .xml, nor a folder with one model; name the .onnx or .xml file")
    return found
