"""An arm64 Python under qemu-user, to run bench/runner.py on ARM kernels on an x86 machine.

Why by hand: no library builds a foreign-architecture Python without running its binaries.
``setup`` makes one from Debian's arm64 packages and PyPI's aarch64 wheels, without executing
any ARM code until the final check (facts and pitfalls: ../shared/notes/arm64-emulation.md):

1. apt, with a private state folder and ``APT::Architecture=arm64``, downloads python3.11 and
   libstdc++6 with their dependencies (about 40 .debs); ``dpkg -x`` unpacks each into ``sysroot/``.
2. ``sysroot/proc/cpuinfo`` describes a Neoverse-N1. qemu 7.2 passes the host's x86 cpuinfo
   through, which makes ``import onnxruntime`` crash; ORT also picks its int8 kernels from this
   identity, so it must match ``-cpu`` (qemu's default ``max`` CPU has SME, which gave wrong int8
   results).
3. pip installs the aarch64 wheels of this machine's onnxruntime and numpy versions into ``site/``.
4. The emulated Python imports both; ``target.json`` records what was made. The folder appears
   only when every step worked (built under ``<root>.partial``, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgepress.errors import TargetError

CPU = "neoverse-n1"
PACKAGES = ("python3.11", "libstdc++6")
PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64")
CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""
SETUP_HINT = "run `edgepress targets setup arm64-emulated` first"
NO_QEMU = "qemu-aarch64 is not installed; install Debian's qemu-user-static (apt-get install qemu-user-static)"


def default_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgepress" / "arm64-emulated"


def find_qemu() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


@dataclass(frozen=True)
class Emulator:
    root: Path
    qemu: str
    facts: dict

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Emulator":
        root = Path(root or default_root())
        if not (root / "target.json").is_file():
            raise TargetError(f"no arm64-emulated target in {root}; {SETUP_HINT}")
        qemu = find_qemu()
        if qemu is None:
            raise TargetError(NO_QEMU)
        return cls(root, qemu, json.loads((root / "target.json").read_text(encoding="utf-8")))

    def python(self, *args: str) -> str:
        """Run the emulated Python with ``args``; its stdout. Fails with its last stderr line."""
        sysroot = self.root / "sysroot"
        command = [self.qemu, "-cpu", CPU, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11"), *args]
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(self.root / "site"), "PYTHONNOUSERSITE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise TargetError(f"the emulated arm64 Python failed ({last}); rebuild the target with `edgepress targets setup arm64-emulated --force`")
        return done.stdout


def setup(root: Path | None = None, force: bool = False) -> Emulator:
    """Build the target in ``root`` (default: the user's cache); reuse a working one unless ``force``."""
    root = Path(root or default_root())
    if find_qemu() is None:
        raise TargetError(f"{NO_QEMU} and run this again")
    if (root / "target.json").is_file() and not force:
        emulator = Emulator.open(root)
        emulator.python("-c", "import numpy, onnxruntime")
        return emulator
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _unpack(_download_debs(partial / "apt"), partial / "sysroot")
        (partial / "sysroot" / "proc").mkdir(exist_ok=True)
        (partial / "sysroot" / "proc" / "cpuinfo").write_text(CPUINFO, encoding="ascii")
        versions = _install_wheels(partial / "site")
        (partial / "target.json").write_text(json.dumps(_facts(versions), indent=2) + "\n", encoding="utf-8")
        emulator = Emulator.open(partial)
        emulator.python("-c", "import numpy, onnxruntime")
        shutil.rmtree(partial / "apt")  # the .debs are unpacked; 16 MB less
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return Emulator.open(root)


def _download_debs(state: Path) -> list[Path]:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise TargetError("setting up arm64-emulated needs apt-get and dpkg (Debian or Ubuntu) to fetch an arm64 Python")
    (state / "lists" / "partial").mkdir(parents=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True)
    (state / "status").touch()  # an empty package database: apt resolves every dependency
    options = [
        "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64", "-o", f"Dir::State={state}",
        "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::State::status={state / 'status'}",
        "-o", f"Dir::Cache={state / 'cache'}", "-o", "Debug::NoLocking=1", "-q",
    ]  # fmt: skip
    _call(["apt-get", *options, "update"], "apt-get update (arm64 package lists)")
    _call(["apt-get", *options, "install", "-y", "--download-only", "--no-install-recommends", *PACKAGES], "downloading arm64 packages")
    debs = sorted((state / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise TargetError("apt downloaded no arm64 packages; check that the apt sources serve arm64 (Debian's do)")
    return debs


def _unpack(debs: list[Path], sysroot: Path) -> None:
    sysroot.mkdir(parents=True)
    for deb in debs:
        _call(["dpkg", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")


def _install_wheels(site: Path) -> dict[str, str]:
    """The aarch64 wheels of the onnxruntime and numpy versions this machine runs, so that both
    sides of the agreement check run the same release."""
    import numpy
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _call(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site),
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platforms,
         *(f"{name}=={version}" for name, version in versions.items())],
        "installing the aarch64 wheels of onnxruntime and numpy",
    )  # fmt: skip
    return versions


def _facts(versions: dict[str, str]) -> dict:
    qemu = find_qemu() or ""
    first = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "qemu": first[0] if first else qemu,
        "cpu": CPU,
        "python": "3.11 (Debian arm64 packages)",
        **versions,
    }


def _call(args: list[str], doing: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise TargetError(f"arm64-emulated setup: {doing} failed: {last}")
