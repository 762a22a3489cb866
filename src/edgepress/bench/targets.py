"""Benchmark targets other than this machine's CPU: a device reached over ssh, and an arm64 CPU
emulated by qemu on this machine.

An ssh device needs Python 3 with numpy and onnxruntime, nothing else: edgepress copies the ONNX
models, the tokenized test texts (one .npz per batch shape) and the standalone runner there, runs
the runner once per batch shape, and fetches its JSON. ssh and scp run with ``BatchMode=yes``, so
they use the user's keys, agent and ``~/.ssh/config`` (or ``bench.ssh_config``) and never prompt
for a password; nothing secret is ever on the command line.

The emulated target runs the same runner under qemu (``bench/emulator.py``) to check that every
ONNX model loads and predicts the same on ARM kernels. On both targets the batch-1 outputs are
compared with this machine's, and a model whose predictions disagree fails the stage. Emulated
latencies are recorded but marked: they say nothing about a real ARM device.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import numpy as np

from edgepress.bench import runner
from edgepress.bench.artifacts import Artifact
from edgepress.bench.measure import artifact_row, encoded_cases, thread_counts
from edgepress.errors import StageError, TargetError
from edgepress.recipe.deploy import BenchSection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SshTarget:
    destination: str  # [user@]host
    port: Optional[int]
    config: Optional[str]
    python: str

    @classmethod
    def from_section(cls, cfg: BenchSection) -> "SshTarget":
        user, host, port = ssh_destination(cfg.target)
        return cls(f"{user}@{host}" if user else host, port, cfg.ssh_config, cfg.remote_python)

    def _options(self, port_flag: str) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        options += ["-F", self.config] if self.config else []
        options += [port_flag, str(self.port)] if self.port else []
        return options

    # "--" ends the options before any name that came from the user: the destination and the
    # files can never be read as options. Local paths are absolute, so scp never takes a colon in
    # a file name for host:path. Remote paths are made by edgepress from mktemp's folder and
    # sanitized file names, and quoted wherever a remote shell reads them.
    def run(self, command: str) -> str:
        return self._call(["ssh", *self._options("-p"), "--", self.destination, command], f"running {command.split()[0]}")

    def put(self, paths: list[Path], remote: str) -> None:
        """Copy into the folder ``remote/``, or one file to the path ``remote``."""
        local = [str(p.resolve()) for p in paths]
        self._call(["scp", "-q", *self._options("-P"), "--", *local, f"{self.destination}:{remote}"], "copying to the device")

    def get(self, remote_path: str, local: Path) -> None:
        self._call(["scp", "-q", *self._options("-P"), "--", f"{self.destination}:{remote_path}", str(local.resolve())], "copying from the device")

    def _call(self, args: list[str], doing: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise TargetError(
                f"ssh target {self.destination}: {doing} failed ({last}); check that `ssh {self.destination}` works "
                "without a password and that the device has python3 with numpy and onnxruntime"
            )
        return done.stdout


def measure_over_ssh(artifacts: list[Artifact], rows: dict[str, list], cfg: BenchSection) -> tuple[list[dict], dict]:
    """The ONNX artifacts timed on the device; rows shaped like ``measure_all``'s, and the device's environment."""
    target = SshTarget.from_section(cfg)
    onnx = onnx_only(artifacts, "an ssh target")
    return _by_tokenizer(onnx, lambda group: _ssh_group(target, group, rows, cfg))


def _ssh_group(target: SshTarget, onnx: list[Artifact], rows: dict[str, list], cfg: BenchSection) -> tuple[list[dict], dict]:
    """Models that share one tokenizer, timed on the device together (interleaved)."""
    from transformers import AutoTokenizer

    remote = target.run("mktemp -d").strip()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch)
            cases = encoded_cases(AutoTokenizer.from_pretrained(onnx[0].folder), rows, cfg)
            target.put([Path(runner.__file__)] + [_npz(local, i, inputs) for i, inputs in enumerate(cases.values())], remote + "/")
            names = unique_names(onnx)
            for artifact in onnx:
                target.put([artifact.path], f"{remote}/{names[artifact.name]}")
            results = [_run_case(target, remote, local, i, names, cfg) for i in range(len(cases))]
            device_outputs = _load_outputs(local / "outputs.npz")
    finally:
        target.run(f"rm -rf -- {shlex.quote(remote)}")
    measured = _rows(onnx, list(cases), results, names)
    add_agreement(measured, onnx, names, cases["batch 1"], device_outputs, cfg.min_agreement)
    return measured, results[0]["environment"]


# emulation is 55-260x slower than native (../shared/notes/arm64-emulation.md): batch 1 on one thread, one round after one warm-up call
EMULATED_SETTINGS = {"threads": [1], "batch_sizes": [], "rounds": 1, "warmup": 1}


def measure_emulated(artifacts: list[Artifact], rows: dict[str, list], cfg: BenchSection) -> tuple[list[dict], dict]:
    """The ONNX artifacts run under the arm64 emulator (``cfg`` with ``EMULATED_SETTINGS``); each
    row carries ``emulated: true`` and its ``agreement`` with this machine's outputs."""
    from edgepress.bench.emulator import Emulator

    emulator = Emulator.open(cfg.emulator_root)
    onnx = onnx_only(artifacts, "the arm64-emulated target")
    return _by_tokenizer(onnx, lambda group: _emulated_group(emulator, group, rows, cfg))


def _emulated_group(emulator: Any, onnx: list[Artifact], rows: dict[str, list], cfg: BenchSection) -> tuple[list[dict], dict]:
    """Models that share one tokenizer, run together under the emulator."""
    from transformers import AutoTokenizer

    examples = encoded_cases(AutoTokenizer.from_pretrained(onnx[0].folder), rows, cfg)["batch 1"]
    names = unique_names(onnx)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch)
        script = Path(shutil.copy(runner.__file__, local / "runner.py"))  # alone: nothing of edgepress beside it
        models = [arg for a in onnx for arg in ("--model", f"{names[a.name]}={a.path.resolve()}")]
        emulator.python(
            str(script), "--inputs", str(_npz(local, 0, examples)), *models, "--threads", "1", "--rounds", str(cfg.rounds),
            "--warmup", str(cfg.warmup), "--json", str(local / "case0.json"), "--outputs", str(local / "outputs.npz"),
        )  # fmt: skip
        result = json.loads((local / "case0.json").read_text())
        emulated = _load_outputs(local / "outputs.npz")
    measured = _rows(onnx, ["batch 1"], [result], names)
    for row in measured:
        row["emulated"] = True
    add_agreement(measured, onnx, names, examples, emulated, cfg.min_agreement)
    return measured, {**result["environment"], "emulated": emulator.facts}


def tokenizer_groups(onnx: list[Artifact]) -> list[list[Artifact]]:
    """The models grouped by tokenizer (the bytes of its files): one set of token ids per group.
    Export and quantize folders copy one tokenizer, so a run's files stay together; a pruned
    student with a trimmed vocabulary and its teacher do not."""
    import hashlib

    groups: dict[str, list[Artifact]] = {}
    for artifact in onnx:
        digest = hashlib.sha256()
        for name in TOKENIZER_FILES:
            if (artifact.folder / name).is_file():
                digest.update(name.encode() + (artifact.folder / name).read_bytes())
        groups.setdefault(digest.hexdigest(), []).append(artifact)
    return list(groups.values())


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt", "vocab.json")


def _by_tokenizer(onnx: list[Artifact], measure: Callable[[list[Artifact]], tuple[list[dict], dict]]) -> tuple[list[dict], dict]:
    """``measure`` per tokenizer group (each feeds its own token ids); rows back in ``onnx``'s order."""
    measured, environment = [], None
    for group in tokenizer_groups(onnx):
        rows, found = measure(group)
        measured += rows
        environment = environment or found
    order = {a.name: i for i, a in enumerate(onnx)}
    return sorted(measured, key=lambda row: order[row["name"]]), environment


def _load_outputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


def add_agreement(measured, onnx: list[Artifact], names: dict[str, str], examples: list[dict], device: dict, minimum: float) -> None:
    """Each row's ``agreement`` between the device's outputs and this machine's on the same batch-1
    inputs; a model below ``minimum`` fails the benchmark: it would predict differently there."""
    native = runner.first_outputs({names[a.name]: str(a.path) for a in onnx}, examples)
    for row, artifact in zip(measured, onnx):
        row["agreement"] = agreement(native, device, names[artifact.name], len(examples))
    check_agreement(measured, minimum)


def agreement(native: dict[str, np.ndarray], emulated: dict[str, np.ndarray], name: str, count: int) -> dict[str, Any]:
    """How far one model's emulated outputs are from this machine's: predicted classes in
    common, and the largest absolute difference of any logit."""
    same, largest = 0, 0.0
    for i in range(count):
        x86, arm = native[f"{name}.{i}"], emulated[f"{name}.{i}"]
        same += int(np.array_equal(x86.argmax(-1), arm.argmax(-1)))
        largest = max(largest, float(np.abs(x86.astype(np.float64) - arm).max()))
    return {"argmax": round(same / count, 4), "max_abs_diff": largest, "examples": count}


def check_agreement(measured: list[dict], minimum: float) -> None:
    low = [f"{r['name']} {100 * r['agreement']['argmax']:.1f}%" for r in measured if r["agreement"]["argmax"] < minimum]
    if low:
        raise StageError(
            f"on the target, predictions differ from this machine's: {', '.join(low)} agree "
            f"(bench.min_agreement is {100 * minimum:.0f}%); the model would predict differently there"
        )


def onnx_only(artifacts: list[Artifact], target: str) -> list[Artifact]:
    onnx = [a for a in artifacts if a.kind == "onnx"]
    if not onnx:
        raise TargetError(f"{target} runs ONNX models only, and there are none; run the export stage first or pass --model")
    if skipped := [a.name for a in artifacts if a.kind != "onnx"]:
        log.info("bench: %s runs ONNX models only; not timed there: %s", target, ", ".join(skipped))
    return onnx


def unique_names(onnx: list[Artifact]) -> dict[str, str]:
    """Artifact name -> a file name for the runner; models may share a file name (model.onnx), and
    a user's file name may hold spaces, quotes or shell syntax, which stay on this machine."""
    return {a.name: f"{i}-{re.sub(r'[^A-Za-z0-9._-]', '_', a.path.name)}" for i, a in enumerate(onnx)}


def ssh_destination(target: str) -> tuple[Optional[str], str, Optional[int]]:
    """(user, host, port) of ``ssh://[user@]host[:port]``; a user or host that ssh could read as an
    option, or that holds whitespace or shell syntax, is refused."""
    parts = urlsplit(target)
    try:
        port = parts.port
    except ValueError:
        raise TargetError(f"target {target!r}: the port is not a number from 1 to 65535") from None
    user, host = parts.username, parts.hostname or ""
    for what, value in (("user", user), ("host", host)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.%\[\]:][A-Za-z0-9_.%\[\]:-]*", value):
            raise TargetError(
                f"target {target!r}: the {what} {value!r} is not a plain name (it {'starts with -, which ssh reads as an option' if value.startswith('-') else 'has characters a name cannot have'}); "
                "write ssh://[user@]host[:port], or name the device in your ssh config and use that name"
            )
    return user, host, port


def _npz(folder: Path, index: int, inputs: list[dict[str, np.ndarray]]) -> Path:
    path = folder / f"case{index}.npz"
    np.savez(path, **{f"{key}.{i}": value for i, example in enumerate(inputs) for key, value in example.items()})
    return path


def _run_case(target: SshTarget, remote: str, local: Path, index: int, names: dict[str, str], cfg: BenchSection) -> dict[str, Any]:
    q = shlex.quote
    models = " ".join(f"--model {q(f'{file}={remote}/{file}')}" for file in names.values())
    threads = " ".join(str(t) for t in thread_counts(cfg))
    out = f"{remote}/case{index}.json"
    outputs = f" --outputs {q(f'{remote}/outputs.npz')}" if index == 0 else ""  # batch 1: the agreement check
    target.run(
        f"{q(target.python)} {q(f'{remote}/runner.py')} --inputs {q(f'{remote}/case{index}.npz')} {models} "
        f"--threads {threads} --rounds {cfg.rounds} --warmup {cfg.warmup} --json {q(out)}{outputs}"
    )
    target.get(out, local / f"case{index}.json")
    if outputs:
        target.get(f"{remote}/outputs.npz", local / "outputs.npz")
    return json.loads((local / f"case{index}.json").read_text())


def _rows(onnx: list[Artifact], cases: list[str], results: list[dict], names: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for artifact in onnx:
        file = names[artifact.name]
        latency: dict[str, dict] = {}
        for case, result in zip(cases, results):
            for threads, per_model in result["threads"].items():
                latency.setdefault(threads, {})[case] = per_model[file]
        rows.append(artifact_row(artifact, latency, {t: latency[t]["batch 1"].get("session_rss_mb") for t in latency}))
    return rows
