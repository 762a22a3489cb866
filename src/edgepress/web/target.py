"""Setting up and opening the browser target: Debian's Chromium, driven by Playwright, and the
JavaScript runtimes (onnxruntime-web, transformers.js) from npm.

The JavaScript side is pinned by ``node/package.json`` and its lock file, which ship inside
edgepress; ``setup`` copies both into the target folder (default ``~/.cache/edgepress/browser``)
and runs ``npm ci --ignore-scripts``: exactly the locked versions, and no install script (the
``onnxruntime-node`` that transformers.js depends on downloads a binary at install time, which the
browser never needs). Nothing is downloaded when a benchmark runs. The folder appears only when
every step worked (built under ``<root>.partial``, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

from edgepress.errors import TargetError

SETUP_HINT = "run `edgepress targets setup browser` first"
NO_CHROMIUM = "Chromium is not installed; install Debian's chromium (apt-get install chromium), or set EDGEPRESS_CHROMIUM to a Chromium or Chrome binary"
NO_NPM = "npm is not installed; install Node.js with npm (apt-get install npm), then run `edgepress targets setup browser`"
NO_PLAYWRIGHT = "the browser target needs Playwright's Python package; pip install 'edgepress[browser]'"
RUNTIMES = ("onnxruntime-web", "@huggingface/transformers")


def default_root() -> Path:
    """EDGEPRESS_BROWSER_ROOT, else ~/.cache/edgepress/browser (under XDG_CACHE_HOME where set)."""
    if named := os.environ.get("EDGEPRESS_BROWSER_ROOT"):
        return Path(named)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgepress" / "browser"


def find_chromium() -> str | None:
    named = os.environ.get("EDGEPRESS_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


@dataclass(frozen=True)
class BrowserTarget:
    root: Path
    chromium: str
    facts: dict

    @property
    def modules(self) -> Path:
        return self.root / "node_modules"

    @classmethod
    def open(cls, root: str | Path | None = None) -> "BrowserTarget":
        """The set-up target in ``root``; one line naming the fix when a part is missing."""
        root = Path(root or default_root())
        chromium = find_chromium()
        if chromium is None:
            raise TargetError(NO_CHROMIUM)
        check_playwright()
        if not (root / "target.json").is_file() or not all((root / "node_modules" / name / "package.json").is_file() for name in RUNTIMES):
            raise TargetError(f"no browser target in {root}; {SETUP_HINT}")
        return cls(root, chromium, json.loads((root / "target.json").read_text(encoding="utf-8")))


def check_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise TargetError(NO_PLAYWRIGHT) from None


def setup(root: str | Path | None = None, force: bool = False) -> BrowserTarget:
    """Install the pinned JavaScript runtimes with ``npm ci`` and check that Chromium runs them."""
    from filelock import FileLock

    root = Path(root or default_root())
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):  # two processes setting up one folder (pytest-xdist workers) take turns
        if not force:
            try:
                return BrowserTarget.open(root)
            except TargetError:
                pass
        return _install(root)


def _install(root: Path) -> BrowserTarget:
    chromium = find_chromium()
    if chromium is None:
        raise TargetError(NO_CHROMIUM)
    npm = shutil.which("npm")
    if npm is None:
        raise TargetError(NO_NPM)
    check_playwright()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        (partial / name).write_bytes((files("edgepress.web") / "node" / name).read_bytes())
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=partial, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        shutil.rmtree(partial, ignore_errors=True)
        raise TargetError(f"npm ci failed in {partial} ({last}); check that this machine reaches the npm registry, then run it again")
    facts = {**_versions(partial), "chromium": _chromium_version(chromium), "made": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (partial / "target.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return BrowserTarget(root, chromium, facts)


def _versions(folder: Path) -> dict[str, str]:
    from importlib.metadata import version

    found = {name: json.loads((folder / "node_modules" / name / "package.json").read_text())["version"] for name in RUNTIMES}
    return {"onnxruntime_web": found["onnxruntime-web"], "transformers_js": found["@huggingface/transformers"], "playwright": version("playwright")}


def _chromium_version(chromium: str) -> str:
    from edgepress.web.browser import launched

    with launched(chromium) as browser:
        return browser.version
