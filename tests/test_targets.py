"""The ssh target against an sshd on 127.0.0.1 started by the test (skipped where sshd cannot start)."""

import getpass
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_schema_valid, require_system_tool
from typer.testing import CliRunner

from edgepress.cli.app import app

runner = CliRunner()
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_config(tmp_path_factory):
    """A throw-away sshd for this user on 127.0.0.1, key login only, and a client config for it."""
    tools = Path(SSHD).is_file() and shutil.which("ssh-keygen") and shutil.which("ssh") and shutil.which("scp")
    require_system_tool(bool(tools), "sshd, ssh, scp or ssh-keygen", "openssh-server")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        f"PidFile {root / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True) if getpass.getuser() == "root" else None  # privilege separation dir
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.PIPE, text=True)
    client = root / "ssh_config"
    client.write_text(
        f"Host bench-device\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {root / 'user_key'}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
    )
    for _ in range(50):
        probe = subprocess.run(["ssh", "-F", str(client), "-o", "BatchMode=yes", "bench-device", "true"], capture_output=True)
        if probe.returncode == 0:
            break
        if server.poll() is not None:
            pytest.skip(f"sshd could not start: {server.stderr.read()[-300:]}")
        time.sleep(0.2)
    else:
        server.terminate()
        pytest.skip("sshd did not accept the test key")
    yield client
    server.terminate()
    server.wait(timeout=10)


def test_onnx_models_are_timed_on_the_device_over_ssh(ssh_config, tmp_path, tiny_classifier, tiny_csv):
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    (export,) = run_recipe(validate_recipe({
        "name": "dev", "output_dir": str(tmp_path / "runs"), "stages": ["export"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "export": {"max_seq_length": 24, "mobile": False},
    }))  # fmt: skip
    odd = tmp_path / "a folder with 'quotes' and \"more\""
    shutil.copytree(export.folder, odd)
    odd_file = (odd / "model.onnx").rename(odd / "my model; $(touch pwned) 'v2'.onnx")
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "bench", "--run", str(export.folder.parent), "--model", f"odd={odd_file}",
        "--data", str(tiny_csv), "--output", str(out),
        "--target", "ssh://bench-device", "--ssh-config", str(ssh_config), "--remote-python", sys.executable,
        "--examples", "8", "--rounds", "4", "--threads", "1", "--batch-size", "4", "--max-seq-length", "24",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    assert document["environment"]["target"] == "ssh://bench-device" and document["environment"]["device"]["onnxruntime"]
    assert [a["name"] for a in document["artifacts"]] == ["01-export/model.onnx", "01-export/model_optimized.onnx", "odd"]
    assert not list(Path.home().glob("pwned")) and not list(tmp_path.rglob("pwned"))
    for artifact in document["artifacts"]:
        assert artifact["latency"]["1"]["batch 1"]["runs"] == 8 * 4
        assert artifact["latency"]["1"]["batch 4 x 24"]["runs"] == 2 * 4
        assert len(artifact["latency"]["1"]["batch 1"]["round_p50_ms"]) == 4
        assert artifact["agreement"] == {"argmax": 1.0, "max_abs_diff": 0.0, "examples": 8}  # the same CPU, the same ORT


def test_an_unreachable_device_is_one_line(tmp_path, tiny_classifier, tiny_csv):
    require_system_tool(bool(shutil.which("ssh")), "ssh", "openssh-client")
    from test_runner import tiny_model

    config = tmp_path / "ssh_config"
    config.write_text(f"Host nowhere\n  HostName 127.0.0.1\n  Port {_free_port()}\n")
    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model, ignore=shutil.ignore_patterns("*.safetensors"))
    tiny_model(model / "model.onnx")  # an ONNX file beside the tokenizer
    result = runner.invoke(app, [
        "bench", "--model", f"m={model / 'model.onnx'}", "--data", str(tiny_csv), "--target", "ssh://nowhere",
        "--ssh-config", str(config), "--output", str(tmp_path / "o"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "ssh target nowhere" in result.output and "without a password" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("target", ["ssh://-oProxyCommand=touch%20pwned", "ssh://-oProxyCommand=x@host", "ssh://user@host;touch%20pwned", "ssh://host:99999"])
def test_ssh_names_that_are_not_plain_names_are_refused(tmp_path, tiny_classifier, tiny_csv, target, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", "--model", f"m={tiny_classifier}", "--data", str(tiny_csv), "--target", target, "--output", "o"])
    assert result.exit_code == 1 and f"target {target!r}:" in result.output and "Traceback" not in result.output
    assert ("ssh reads as an option" in result.output) == ("//-" in target)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o").exists()


def test_ssh_and_scp_never_read_the_destination_as_an_option(tmp_path):
    """Past the name check, "--" still keeps ssh and scp from taking a destination for an option."""
    require_system_tool(bool(shutil.which("ssh")), "ssh", "openssh-client")
    from edgepress.bench.targets import SshTarget
    from edgepress.errors import TargetError

    marker = tmp_path / "pwned"
    target = SshTarget(f"-oProxyCommand=touch {marker}", None, None, "python3")
    (tmp_path / "f").write_text("x")
    for call in (lambda: target.run("true"), lambda: target.put([tmp_path / "f"], "/tmp/"), lambda: target.get("/x", tmp_path / "g")):
        with pytest.raises(TargetError):
            call()
    assert not marker.exists()


def test_unknown_targets_say_what_exists(tmp_path):
    result = runner.invoke(app, ["bench", "--model", f"m={tmp_path}", "--target", "tpu"])
    assert result.exit_code == 2 and "use cpu, cuda, arm64-emulated, browser or ssh://" in result.output


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_cuda_without_a_gpu_is_one_line(tmp_path, tiny_classifier, tiny_csv):
    if _has_cuda():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, [
        "bench", "--model", f"m={tiny_classifier}", "--data", str(tiny_csv), "--target", "cuda", "--output", str(tmp_path / "o"),
    ])  # fmt: skip
    assert result.exit_code == 1 and "PyTorch sees no CUDA device" in result.output and "--target cpu" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_cuda_onnx_models_need_onnxruntime_gpu(tmp_path, tiny_classifier, tiny_csv):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    from test_runner import tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model, ignore=shutil.ignore_patterns("*.safetensors"))
    tiny_model(model / "model.onnx")
    result = runner.invoke(app, ["bench", "--model", f"m={model / 'model.onnx'}", "--data", str(tiny_csv), "--target", "cuda"])
    assert result.exit_code == 1 and "no CUDAExecutionProvider; install onnxruntime-gpu" in result.output


@pytest.mark.gpu
def test_torch_models_are_timed_on_the_gpu_in_fp32_and_fp16(tmp_path, tiny_classifier, tiny_csv):
    if not _has_cuda():
        pytest.skip("no CUDA device")
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "bench", "--model", f"m={tiny_classifier}", "--data", str(tiny_csv), "--target", "cuda", "--output", str(out),
        "--examples", "8", "--rounds", "2", "--batch-size", "4", "--max-seq-length", "24",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    assert [a["name"] for a in document["artifacts"]] == ["m", "m fp16"]
    assert document["environment"]["gpu"] and document["settings"]["threads"] == [1]
    for artifact in document["artifacts"]:
        assert 0 < artifact["latency"]["1"]["batch 1"]["p50_ms"] and artifact["latency"]["1"]["batch 4 x 24"]["runs"] == 4
    assert document["artifacts"][0]["test"]["accuracy"] >= 0.95 and document["artifacts"][1]["precision"] == "fp16"


def test_models_are_grouped_by_their_tokenizer(tmp_path, tiny_bert, tiny_ner_bert):
    """ssh and emulated targets feed each group its own token ids: copies of one tokenizer (a run's
    export and quantize folders) stay together, another vocabulary (a trimmed student) does not."""
    import shutil

    from edgepress.bench.artifacts import Artifact
    from edgepress.bench.targets import tokenizer_groups

    folders = {}
    for name, source in (("export", tiny_bert), ("quantize", tiny_bert), ("other", tiny_ner_bert)):
        folders[name] = tmp_path / name
        shutil.copytree(source, folders[name])
    artifacts = [Artifact(f"{n}/model.onnx", "onnx", folders[n] / "model.onnx", folders[n]) for n in ("export", "other", "quantize")]
    assert [[a.name for a in group] for group in tokenizer_groups(artifacts)] == [["export/model.onnx", "quantize/model.onnx"], ["other/model.onnx"]]
