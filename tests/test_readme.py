"""The READMEs' commands as written: every `edgepress` command names a command and options that
exist, every `make` target and benchmark script exists and takes the options shown, and the blocks
marked ``<!-- readme-test: run -->`` run offline, for real, in a fresh folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main

from edgepress.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARK = "<!-- readme-test: run -->"


def shell_blocks(path: Path) -> list[tuple[bool, str]]:
    """(marked to run?, text) of every ```bash block."""
    text = path.read_text(encoding="utf-8")
    return [(bool(mark), body) for mark, body in re.findall(r"(<!-- readme-test: run -->\n)?```bash\n(.*?)```", text, re.S)]


def commands(block: str) -> list[list[str]]:
    """Each command of a block as argv: continuation lines joined, comments and redirections dropped."""
    joined = block.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(line)
        found.append(argv[: argv.index(">")] if ">" in argv else argv)
    return found


ALL = [(str(doc.relative_to(ROOT)), argv) for doc in DOCS for _, block in shell_blocks(doc) for argv in commands(block)]


def _command(argv: list[str]):
    """The (click-style) command an `edgepress ...` argv reaches, and the arguments left for it."""
    command = typer.main.get_command(app)
    rest = argv[1:]
    while getattr(command, "commands", None) and rest and not rest[0].startswith("-"):
        rest = command.route(rest) if hasattr(command, "route") else rest  # `edgepress search RECIPE` runs `search run`
        assert rest[0] in command.commands, f"no command {rest[0]!r} in `{' '.join(argv)}`"
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_the_readmes_have_commands_to_check():
    names = {argv[0] for _, argv in ALL}
    assert {"edgepress", "make"} <= names and sum(argv[0] == "edgepress" for _, argv in ALL) >= 12


@pytest.mark.parametrize("doc, argv", [(d, a) for d, a in ALL if a[0] == "edgepress"], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_edgepress_command_parses(doc, argv):
    command, rest = _command(argv)
    with command.make_context(command.name, list(rest), resilient_parsing=False) as ctx:
        assert ctx.params is not None  # click raised on an unknown option, a missing argument or a bad value


@pytest.mark.parametrize("doc, argv", [(d, a) for d, a in ALL if a[0] == "make"], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_make_target_exists(doc, argv):
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert set(argv[1:]) <= targets


@pytest.mark.parametrize("doc, argv", [(d, a) for d, a in ALL if a[0] == "python"], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_benchmark_command_takes_its_options(doc, argv):
    script = ROOT / argv[1]
    assert script.is_file(), f"{argv[1]} does not exist"
    usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 0, usage.stderr[-500:]
    # option names only: a quoted value such as --bench-args "--threads 1" is one token with spaces
    for option in (a.split("=")[0] for a in argv[2:] if re.fullmatch(r"--[a-z][a-z0-9-]*(=\S*)?", a)):
        assert option in usage.stdout, f"{argv[1]} has no option {option}"


def test_marked_blocks_run_offline_in_a_fresh_folder(tmp_path):
    marked = [block for doc in DOCS for run, block in shell_blocks(doc) if run]
    assert marked, f"no block is marked {RUN_MARK}"
    edgepress = Path(sys.executable).parent / "edgepress"
    for block in marked:
        script = block.replace("edgepress ", f"{edgepress} ")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, f"{block}\n{done.stdout[-1000:]}{done.stderr[-1000:]}"
    assert "stages:" in (tmp_path / "my.yaml").read_text()
