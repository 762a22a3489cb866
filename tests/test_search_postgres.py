"""One search study shared by several workers through a real PostgreSQL server (issue 33).

The server is a throw-away cluster: Debian's `postgresql` binaries, `initdb` into a temporary
folder (as the `postgres` user when this is root), listening on 127.0.0.1 only, stopped and removed
at the end. `make test` installs the package when root with apt; where it could not, these tests
skip and name it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import require_system_tool
from test_search_stopping import has_heartbeat, search_yaml
from typer.testing import CliRunner

from edgepress.cli.app import app
from edgepress.search.study import done_trials, open_storage

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """The URL of a fresh PostgreSQL server on 127.0.0.1 (trust authentication, user edgepress)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    require_system_tool(bool(found), "PostgreSQL's server (initdb)", "postgresql")
    bin_dir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="edgepress-pg-"))  # under /tmp: the postgres user must reach it
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    run = lambda *args: subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True, text=True)  # noqa: E731
    run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "edgepress", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    run(bin_dir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-o", options, "-w", "start")
    try:
        yield f"postgresql+psycopg://edgepress@127.0.0.1:{port}/postgres"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_study_and_one_reruns_the_trial_of_a_killed_one(postgres, tmp_path, tiny_classifier, tiny_csv):
    slower = {"heads": 0.5, "steps": 1, "epochs": 3, "learning_rate": 2e-3}  # a few seconds a trial
    space = {"prune.vocabulary.min_count": [1, 2, 3, 4, 5, 6], "export.optimize": [True]}
    path = search_yaml(tmp_path, tiny_classifier, tiny_csv, "pg", prune=slower, space=space, sampler="random", trials=4, heartbeat_s=1)
    # the first worker creates the tables; workers started at the same instant would race to (as documented)
    optuna.create_study(study_name="pg", storage=open_storage(postgres, 1), directions=["maximize", "minimize"])
    workers = {
        name: subprocess.Popen([sys.executable, "-m", "edgepress", "search", path, "--storage", postgres, "--set", f"output_dir={tmp_path / name}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "COLUMNS": "300"})
        for name in ("a", "b")
    }  # fmt: skip
    try:
        killed = _kill_mid_trial(workers["a"], postgres)
        output, errors = workers["b"].communicate(timeout=400)
        killed_log = workers["a"].communicate(timeout=30)[1]
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
    assert killed is not None and workers["b"].returncode == 0, errors[-2000:]
    study = optuna.load_study(study_name="pg", storage=postgres)
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and "error" not in t.user_attrs]
    assert [t.number for t in stale] == [killed]  # a's trial, failed by b once its heartbeat stopped
    assert stale[0].user_attrs["worker"] == f"{socket.gethostname()}:{workers['a'].pid}"
    rerun = [t for t in study.trials if t.system_attrs.get("failed_trial") == stale[0].number]
    assert len(rerun) == 1 and rerun[0].state == optuna.trial.TrialState.COMPLETE and rerun[0].params == stale[0].params
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # the study is full (b stops at 4; a trial a finished before the kill may make 5) and no trial ran twice:
    # each complete trial was finished by one worker, as their logs say
    assert 4 <= len(done_trials(study)) <= 5 and len(complete) == len(done_trials(study))
    finished = [re.findall(r"search trial (\d+): ", log) for log in (killed_log, errors)]
    assert not set(finished[0]) & set(finished[1]) and sorted(map(int, finished[0] + finished[1])) == [t.number for t in complete]
    assert f"re-run of trial {stale[0].number}" in output
    shown = runner.invoke(app, ["search", "show", path, "--storage", postgres])
    assert shown.exit_code == 0 and f"pg: {len(study.trials)} trials" in shown.output, shown.output


def test_a_server_that_is_down_is_one_line(tmp_path, tiny_classifier, tiny_csv):
    path = search_yaml(tmp_path, tiny_classifier, tiny_csv, "down", trials=1)
    url = f"postgresql+psycopg://edgepress:secret@127.0.0.1:{_free_port()}/postgres"  # nothing listens there
    for command in (["search", path], ["search", "show", path]):
        result = runner.invoke(app, [*command, "--storage", url])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "cannot open the study storage" in result.output and "Connection refused" in result.output
        assert "secret" not in result.output and "check that the database server runs" in result.output


def _kill_mid_trial(worker: subprocess.Popen, url: str) -> int | None:
    """SIGKILL ``worker`` once a trial it runs has beaten its heartbeat; returns that trial's number."""
    name, deadline = f"{socket.gethostname()}:{worker.pid}", time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            trials = optuna.load_study(study_name="pg", storage=url).trials
        except Exception:  # the study is being created
            trials = []
        mine = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("worker") == name]
        if mine and has_heartbeat(url, "pg", mine[0]):
            os.killpg(worker.pid, signal.SIGKILL)
            return mine[0]
        time.sleep(0.1)
    return None
