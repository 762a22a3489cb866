"""The web-ready folder: a model that transformers.js loads from a local path or URL, with a demo page.

Layout (what transformers.js reads, plus the page and what it needs)::

    config.json  tokenizer.json  tokenizer_config.json (model_max_length: the stage's max_seq_length)
    onnx/model.onnx            fp32, the plain exported graph (standard ONNX operators only)
    onnx/model_quantized.onnx  dynamic int8: transformers.js's ``dtype: "q8"`` (its file suffix ``_quantized``)
    index.html  lib/           the demo page, transformers.js and onnxruntime-web's WebAssembly
    edgepress.json             how it was made: sources with hashes, runtime versions, labels

The plain fp32 graph rather than the fused one: the fused graph's contrib operators are ONNX
Runtime's, and a WASM build is free to leave any out; ``edgepress bench --target browser`` times
both, with the int8 files, so the choice can be checked on the device. The folder is written whole
or not at all (the stage's own folder is renamed into place when the stage returns).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from edgepress.errors import RecipeError
from edgepress.running.runs import hash_file

FOLDER = "web"
FILES = {"fp32": "onnx/model.onnx", "q8": "onnx/model_quantized.onnx"}
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# transformers.js's single-file build and the WebAssembly it loads by default (its "asyncify" build)
LIB = {
    "@huggingface/transformers": ("dist/transformers.min.js", "LICENSE"),
    "onnxruntime-web": ("dist/ort-wasm-simd-threaded.asyncify.mjs", "dist/ort-wasm-simd-threaded.asyncify.wasm"),  # MIT, says its package.json; no LICENSE file
}
DESCRIPTIONS = {
    "text-classification": "Type a text; the model gives every label a score.",
    "token-classification": "Type a sentence; the model tags every word.",
}


def runtime_modules() -> Path:
    """node_modules of the browser target, which the folder's lib/ is copied from."""
    from edgepress.web.target import SETUP_HINT, default_root

    modules = default_root() / "node_modules"
    if not all((modules / name / "package.json").is_file() for name in LIB):
        raise RecipeError(f"a web-ready folder carries transformers.js and onnxruntime-web, and {modules} has none; {SETUP_HINT} (or set web: false)")
    return modules


def write_web_folder(
    out: Path, source: Path, models: dict[str, Path], task: str, max_length: int, example: str, made_by: dict[str, Any]
) -> dict[str, Any]:
    """Write ``out`` from the tokenizer and config in ``source`` and ``models`` (dtype -> ONNX file);
    its manifest, which is also returned. The tokenizer's ``model_max_length`` becomes ``max_length``
    (the length the stage checked the model at): transformers.js's pipelines truncate to it."""
    modules = runtime_modules()
    if not (source / "tokenizer.json").is_file():
        raise RecipeError(f"{source} has no tokenizer.json; transformers.js reads fast tokenizers only (save the tokenizer with a fast class)")
    (out / "onnx").mkdir(parents=True)
    copied = {name: source / name for name in MODEL_FILES if (source / name).is_file()}
    copied.update({FILES[dtype]: path for dtype, path in models.items()})
    for name, path in copied.items():
        shutil.copyfile(path, out / name)
    settings = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    (out / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": max_length}, indent=2) + "\n", encoding="utf-8")
    versions = _vendor(modules, out / "lib")
    (out / "index.html").write_bytes((files("edgepress.web") / "pages" / "index.html").read_bytes())
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    manifest = {
        "kind": "edgepress.web/1",
        "title": f"{made_by.get('run', 'edgepress')}: {task}",
        "pipeline_task": task,
        "task_description": DESCRIPTIONS[task],
        "labels": [config["id2label"][str(i)] for i in range(len(config["id2label"]))],
        "dtypes": {dtype: FILES[dtype] for dtype in models},
        "default_dtype": "q8" if "q8" in models else "fp32",
        "max_seq_length": max_length,
        "example_text": example,
        "edgepress_version": _version(),
        "runtimes": versions,
        "made_by": made_by,
        # relative to this folder: a stage's folder is renamed into place after it is written
        "files": {name: {"from": os.path.relpath(path, out), "sha256": hash_file(out / name)} for name, path in copied.items()},
    }
    (out / "edgepress.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def check_web_source(folder: Path) -> None:
    """quantize's web folder copies the export's fp32 graph: fail before quantizing when it is not there."""
    runtime_modules()
    if not (folder / "model.onnx").is_file():
        raise RecipeError(f"quantize.web copies the export's model.onnx, and {folder} has none; run the export stage before quantize")


def write_for_stage(ctx: Any, source: Path, models: dict[str, Path]) -> dict[str, Any]:
    """The stage's ``web/`` folder; what its manifest records about it."""
    stage = "quantize" if "q8" in models else "export"
    length = getattr(ctx.recipe, stage).max_seq_length
    manifest = write_web_folder(ctx.out_dir / FOLDER, source, models, ctx.data.task, length, example_text(ctx.data), {"run": ctx.recipe.name, "stage": stage})
    return {"folder": FOLDER, "dtypes": manifest["dtypes"], "runtimes": manifest["runtimes"], "bytes": _bytes(ctx.out_dir / FOLDER)}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def example_text(data: Any) -> str:
    """A test text to fill the demo's box with (a tagging task's words joined by spaces)."""
    text = data.test.to_dict()["text"][0]
    return " ".join(text) if isinstance(text, (list, tuple)) else str(text)


def _vendor(modules: Path, lib: Path) -> dict[str, str]:
    lib.mkdir()
    versions = {}
    for package, names in LIB.items():
        for name in names:
            target = lib / (f"{package.split('/')[-1]}.LICENSE" if name == "LICENSE" else Path(name).name)
            shutil.copyfile(modules / package / name, target)
        versions[package] = json.loads((modules / package / "package.json").read_text())["version"]
    return {"transformers_js": versions["@huggingface/transformers"], "onnxruntime_web": versions["onnxruntime-web"]}


def _version() -> str:
    from edgepress import __version__

    return __version__


def find(folder: Path) -> Optional[Path]:
    """The web-ready folder inside a stage folder, if it has one."""
    web = folder / FOLDER
    return web if (web / "edgepress.json").is_file() else None
