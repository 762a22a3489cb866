"""Run folders, stage manifests, atomic writes and resume.

Layout: ``<output_dir>/<name>/recipe.yaml`` (the resolved recipe of the last run) and one folder
per stage, ``NN-<stage>/``, holding the artifact and ``edgepress.json``. A stage writes into a
hidden partial folder, ``.NN-<stage>.partial-<fingerprint>``, renamed into place only when the
stage has finished, so a crash never leaves a half-written artifact where a later stage (or a user)
would read it. An error removes the partial folder; a kill (SIGKILL, power loss) leaves it, and the
next run of the same stage with the same fingerprint resumes from the training checkpoints inside
it (compress/training/trainer.py); partial folders of other fingerprints are removed, and the run says so.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

log = logging.getLogger(__name__)

MANIFEST = "edgepress.json"
CHECKPOINTS = ".checkpoints"  # inside a partial folder: what an interrupted stage resumes from
MANIFEST_SCHEMA = 1
TRACKED_PACKAGES = (
    "edgepress", "torch", "transformers", "datasets", "accelerate", "onnx", "onnxruntime",
    "onnxscript", "optimum", "optimum-onnx", "neural-compressor", "neural-compressor-pt", "openvino", "nncf", "numpy", "scikit-learn",
)  # fmt: skip


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` except the manifest, keyed by relative path."""
    return {
        path.relative_to(folder).as_posix(): hash_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def tree_hash(hashes: dict[str, str]) -> str:
    """One hash for a folder, from its per-file hashes."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def model_hash(source: str) -> str:
    """A teacher's cache key: its folder's tree hash, or ``hub:<id>`` for a Hub model."""
    from edgepress.models import is_local

    return tree_hash(file_hashes(Path(source))) if is_local(source) else f"hub:{source}"


def fingerprint(stage: str, config: dict[str, Any], inputs: dict[str, Any], code: Optional[str] = None) -> str:
    """What decides whether a stage must run again: its name, resolved config, input hashes, and
    edgepress's own code (``code_hash``): with an editable install a fix changes no version string,
    yet must re-run the stages it affects."""
    payload = {"stage": stage, "config": config, "inputs": inputs, "edgepress": package_version("edgepress"), "code": code or code_hash()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def code_hash(root: Optional[Path] = None) -> str:
    """sha256 over the relative paths and contents of edgepress's source files (``*.py`` and the
    JSON schemas), from ``root`` (default: the installed package)."""
    root = root or Path(__file__).resolve().parents[1]  # the edgepress package (this file is in running/)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts)
    return tree_hash({p.relative_to(root).as_posix(): hash_file(p) for p in files})


def package_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    versions = {name: package_version(name) for name in TRACKED_PACKAGES}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {k: v for k, v in versions.items() if v},
    }


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def stage_dir(self, index: int, stage: str) -> Path:
        return self.root / f"{index:02d}-{stage}"

    def write_text(self, name: str, text: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        partial = target.with_name(f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        return target

    @contextlib.contextmanager
    def staging(self, final: Path, key: str) -> Iterator[Path]:
        """Yield the partial folder of ``final`` for ``key`` (the stage's fingerprint), beside it so
        that the rename stays on one file system; on success it replaces ``final``, on error it is
        removed. A partial folder a killed run left for the same key is reused, keeping only its
        checkpoints."""
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_dir(final, key)
        remove_leftovers(final, keep=partial)
        if partial.is_dir():
            _keep_only_checkpoints(partial)
        partial.mkdir(exist_ok=True)
        try:
            yield partial
            _swap_into_place(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


def partial_dir(final: Path, key: str) -> Path:
    """Where the stage that ends in ``final`` writes while it runs (every process of a launch agrees on it)."""
    return final.parent / f".{final.name}.partial-{key[:16]}"


def remove_leftovers(final: Path, keep: Path | None = None) -> list[str]:
    """Remove what killed runs left beside ``final``: partial folders of other fingerprints, a
    replaced folder not yet deleted, old-style Trainer scratch folders. Returns their names."""
    patterns = (f".{final.name}.partial-*", f".{final.name}.old-*", ".trainer-*")
    found = sorted({p for pattern in patterns for p in final.parent.glob(pattern) if p.is_dir() and p != keep})
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    if found:
        log.info("removed %s, left by an interrupted run", ", ".join(p.name for p in found))
    return [p.name for p in found]


def _keep_only_checkpoints(partial: Path) -> None:
    """A killed run's outputs may be half-written: only its checkpoints (written atomically by the
    Trainer, each a complete folder) are kept to resume from."""
    for path in partial.iterdir():
        if path.name == CHECKPOINTS:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if (partial / CHECKPOINTS).is_dir():
        log.info("%s: resuming, with the checkpoints an interrupted run left", partial.name)


def drop_checkpoints(folder: Path) -> None:
    """Checkpoints are for resuming, not part of the artifact: removed before it is hashed."""
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)


def _swap_into_place(partial: Path, final: Path) -> None:
    # rename() cannot replace a non-empty folder: move the old one aside first, then drop it.
    retired = None
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(retired)
    try:
        partial.rename(final)
    except BaseException:
        if retired is not None:  # put the previous artifact back rather than leave none
            retired.rename(final)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def recorded_metrics(source: str, split: str = "test") -> Optional[dict[str, Any]]:
    """The metrics an edgepress stage recorded for ``split`` in the folder ``source`` (None for a
    Hub id, a folder made elsewhere, or a split it did not measure)."""
    manifest = read_manifest(Path(source)) if Path(source).is_dir() else None
    return ((manifest or {}).get("metrics") or {}).get(split)


def current_manifest(folder: Path, expected_fingerprint: str) -> Optional[dict[str, Any]]:
    """The stage's manifest if the stage need not run again: same fingerprint, outputs untouched."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("fingerprint") != expected_fingerprint:
        return None
    if file_hashes(folder) != manifest.get("outputs"):
        return None  # an artifact file was changed or removed since the stage wrote it
    return manifest
