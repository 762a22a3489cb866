"""Issue 17: every row of the bad-input table in docs/errors.md, run as a real `edgepress` process.

The table is the specification: its exit code and message excerpt are what each case must print.
Every case must also print exactly one `error:` line, no traceback, and leave no partial artifact."""

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from conftest import synthetic_rows, write_rows

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ROOT = Path(__file__).resolve().parent.parent
ROWS = re.findall(r"^\| ([a-z0-9-]+) \| .*? \| (\d+) \| (.*?) \|$", (ROOT / "docs" / "errors.md").read_text(), re.M)


@dataclass
class World:
    root: Path
    model: Path  # the tiny fine-tuned classifier (safetensors, tokenizer, config)
    data: Path  # tiny topic CSV

    def recipe(self, name: str, text: str | dict) -> str:
        path = self.root / f"{name}.yaml"
        path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
        return str(path)

    def finetune(self, name: str, model: Path | None = None, data: Path | None = None, **extra) -> dict:
        return {"name": name, "output_dir": str(self.root / "runs"), "stages": ["finetune"],
                "model": {"name_or_path": str(model or self.model)}, "data": {"source": str(data or self.data)},
                "finetune": {"epochs": 1, "max_seq_length": 16}, **extra}  # fmt: skip

    def model_copy(self, name: str, change: Callable[[Path], None]) -> Path:
        folder = self.root / name
        shutil.copytree(self.model, folder, ignore=shutil.ignore_patterns("edgepress.json"))
        change(folder)
        return folder

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path


@dataclass
class Case:
    argv: list[str]
    limit_file_size: int | None = None  # bytes: RLIMIT_FSIZE, a disk that fills up
    interrupt_when: Callable[[], bool] | None = None  # send SIGINT once this holds
    env: dict[str, str] | None = None  # set for this process only


def _cases(w: World) -> dict[str, Callable[[], Case]]:
    run = lambda recipe, *more: Case(["run", recipe, *more])  # noqa: E731
    fine = w.finetune
    return {
        "recipe-missing": lambda: run(str(w.root / "nope.yaml")),
        "yaml-syntax": lambda: run(w.recipe("syntax", "name: x\nstages: [finetune\n")),
        "recipe-not-mapping": lambda: run(w.recipe("list", "- a\n- b\n")),
        "unknown-key": lambda: run(w.recipe("key", "finetune:\n  learnin_rate: 1\n")),
        "negative-lr": lambda: run(w.recipe("lr", "finetune:\n  learning_rate: -1\n")),
        "temperature-zero": lambda: run(w.recipe("temp", "distill:\n  loss:\n    temperature: 0\n")),
        "prune-fraction": lambda: run(w.recipe("frac", "prune:\n  heads: 1.5\n")),
        "unknown-stage": lambda: run(w.recipe("stage", "stages: [finetune, compile]\n")),
        "override-syntax": lambda: run(w.recipe("o1", "name: o\n"), "--set", "finetune.epochs"),
        "override-path": lambda: run(w.recipe("o2", "name: o\n"), "--set", "finetune.epoch=1"),
        "data-missing": lambda: run(w.recipe("d1", fine("d1", data=w.root / "none.csv"))),
        "data-empty": lambda: run(w.recipe("d2", fine("d2", data=w.file("empty.csv", "")))),
        "data-undecodable": lambda: run(w.recipe("d3", fine("d3", data=w.file("bin.csv", b"text,label\n\xff\xfe\x81 w,a\n" * 20)))),
        "data-column": lambda: run(w.recipe("d4", fine("d4", data=w.file("body.csv", "body,label\nhello,a\nbye,b\n" * 20)))),
        "data-one-label": lambda: run(w.recipe("d5", fine("d5", data=w.file("one.csv", "text,label\n" + "hello there,a\n" * 40)))),
        "data-unseen-label": lambda: run(w.recipe("d6", {**fine("d6"), "data": {
            "source": str(w.data), "train_file": str(w.data),
            "validation_file": str(write_rows(w.root / "val.csv", [{"text": "goal team", "label": "weather"}] * 5)),
        }})),  # fmt: skip
        "model-missing": lambda: run(w.recipe("m0", fine("m0", model=w.root / "no-such-model"))),
        "model-no-config": lambda: run(w.recipe("m1", fine("m1", model=w.model_copy("noconfig", lambda f: (f / "config.json").unlink())))),
        "model-no-weights": lambda: run(w.recipe("m2", fine("m2", model=w.model_copy("noweights", lambda f: (f / "model.safetensors").unlink())))),
        "model-pickle": lambda: run(w.recipe("m3", fine("m3", model=w.model_copy("pickle", lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"))))),
        "model-remote-code": lambda: run(w.recipe("m4", fine("m4", model=w.model_copy("remote", _needs_remote_code)))),
        "model-truncated": lambda: run(w.recipe("m5", fine("m5", model=w.model_copy("truncated", _truncate_weights)))),
        "export-corrupt": lambda: Case(["export", "--model", str(w.model_copy("garbage", _garbage_weights)), "--data", str(w.data),
                                        "--output-dir", str(w.root / "runs"), "--name", "export-corrupt"]),  # fmt: skip
        "quantize-corrupt": lambda: Case(["quantize", "--model", str(w.model_copy("badonnx", _corrupt_onnx)), "--data", str(w.data),
                                          "--output-dir", str(w.root / "runs"), "--name", "quantize-corrupt"]),  # fmt: skip
        "bench-not-onnx": lambda: _bench(w, w.model_copy("textonnx", _corrupt_onnx) / "model.onnx"),
        "bench-missing": lambda: _bench(w, w.root / "missing.onnx"),
        "onnx-inputs": lambda: _bench(w, w.model_copy("fooinput", _graph_with_input_foo) / "model.onnx"),
        "output-is-file": lambda: run(w.recipe("out1", fine("out1")), "--output-dir", str(w.file("a-file", "x") / "runs")),
        "output-not-writable": lambda: run(w.recipe("out2", fine("out2")), "--output-dir", "/sys/edgepress-runs"),
        "disk-full": lambda: Case(["run", w.recipe("full", fine("full"))], limit_file_size=64_000),
        "other-recipe": lambda: _other_recipe(w),
        "cuda-no-gpu": lambda: Case(["bench", "--model", f"m={w.model}", "--data", str(w.data), "--target", "cuda",
                                     "--output", str(w.root / "bench-cuda")]),  # fmt: skip
        "ssh-silent": lambda: _silent_ssh(w),
        "browser-not-set-up": lambda: _browser_bench(w),
        "browser-no-chromium": lambda: Case(["targets", "setup", "browser", "--dir", str(w.root / "browser")],
                                            env={"EDGEPRESS_CHROMIUM": str(w.root / "no-chromium")}),  # fmt: skip
        "web-no-runtimes": lambda: Case(["run", w.recipe("web1", {**fine("web1"), "stages": ["export"], "export": {"web": True}})],
                                        env={"EDGEPRESS_BROWSER_ROOT": str(w.root / "no-browser")}),  # fmt: skip
        "web-static-only": lambda: run(w.recipe("web2", {**fine("web2"), "stages": ["export", "quantize"],
                                                         "quantize": {"web": True, "dynamic": False}})),  # fmt: skip
        "select-without-tune": lambda: run(w.recipe("select", {"quantize": {"select": "most_accurate", "tune": False}})),
        "gate-schema": lambda: Case(["gate", "--baseline", str(w.file("schema.json", json.dumps({"schema": 99}))), "--current",
                                     str(w.root / "schema.json")]),  # fmt: skip
        "gate-missing": lambda: Case(["gate", "--baseline", str(w.root / "none.json"), "--current", str(w.root / "none.json")]),
        "search-path": lambda: Case(["search", w.recipe("sp", {**fine("sp"), "search": {"space": {"prune.head": [0.5]}, "objectives": ["accuracy"]}})]),
        "search-timed-torch": lambda: Case(["search", w.recipe("stt", {**fine("stt"), "search": {"space": {"finetune.epochs": [1]},
                                            "objectives": ["accuracy", "latency_ms"], "reference": str(w.root / "ref.onnx")}})]),  # fmt: skip
        "search-bench": lambda: Case(["search", w.recipe("sbench", {**fine("sbench"), "stages": ["finetune", "export", "bench"],
                                      "search": {"space": {"finetune.epochs": [1]}, "objectives": ["accuracy"]}})]),  # fmt: skip
        "search-storage-down": lambda: Case(["search", w.recipe("sdown", {**fine("sdown"), "search": {"space": {"finetune.epochs": [1]}, "objectives": ["accuracy"]}}),
                                             "--storage", f"postgresql+psycopg://edgepress@127.0.0.1:{_closed_port()}/postgres"]),  # fmt: skip
        "search-timeout": lambda: Case(["search", w.recipe("st", {**fine("st"), "search": {"space": {"finetune.epochs": [1]}, "objectives": ["accuracy"]}}),
                                        "--timeout", "soon"]),  # fmt: skip
        "interrupted": lambda: _interrupted(w),
        "inc-no-torch": lambda: Case(["quantize", "--backend", "neural-compressor", "--model",
                                      str(w.model_copy("onnx-only", lambda f: (f / "model.safetensors").unlink())), "--data", str(w.data),
                                      "--output-dir", str(w.root / "runs"), "--name", "inc-no-torch"]),  # fmt: skip
        **_token_cases(w, run),
        **_first_use_cases(w, run),
        **_transfer_cases(w, run),
    }


def _transfer_cases(w: World, run: Callable) -> dict[str, Callable[[], Case]]:
    """Issue 30: bad sources of distillation transfer text, and relation heads that do not divide the
    teacher's width (the teacher is the tiny fine-tuned model, 32 wide)."""

    def distill(name: str, source: Path | None = None, **settings) -> Case:
        transfer = {"transfer": {"source": str(source)}} if source else {}
        recipe = {**w.finetune(name), "stages": ["distill"], "distill": {"epochs": 1, "max_seq_length": 16, **transfer, **settings}}
        return run(w.recipe(name, recipe))

    return {
        "transfer-missing": lambda: distill("t1", w.root / "no-such-texts.txt"),
        "transfer-empty": lambda: distill("t2", w.file("blank.txt", "\n  \n")),
        "transfer-column": lambda: distill("t3", w.file("bodies.csv", "body\nsome words\nmore words\n")),
        "transfer-undecodable": lambda: distill("t4", w.file("latin.txt", b"caf\xe9 au lait\n")),
        "relation-heads": lambda: distill("t5", student={"num_layers": 1}, loss={"relation_weight": 1.0, "relation_heads": 3}),
        "adapt-no-text": lambda: run(w.recipe("a1", {**w.finetune("a1"), "stages": ["adapt", "finetune"], "adapt": {"training_texts": False}})),
        "adapt-source-missing": lambda: run(w.recipe("a2", {**w.finetune("a2"), "stages": ["adapt", "finetune"],
                                                           "adapt": {"source": str(w.root / "no-such-domain.txt")}})),  # fmt: skip
        "tracking-unknown": lambda: run(w.recipe("a3", {**w.finetune("a3"), "tracking": {"report_to": ["tensorbord"]}})),
        "tracking-not-installed": lambda: run(w.recipe("a4", {**w.finetune("a4"), "tracking": {"report_to": ["wandb"]}})),
    }


def _first_use_cases(w: World, run: Callable) -> dict[str, Callable[[], Case]]:
    """Issue 27: inputs a new user gave that were accepted, or refused with a misleading message."""
    fine = w.finetune
    check = lambda name, search: Case(["recipe", "check", w.recipe(name, {**fine(name), "stages": ["finetune", "prune"], "search": search})])  # noqa: E731
    space = lambda domain: {"space": {"prune.heads": domain}, "objectives": ["accuracy"]}  # noqa: E731
    txt = w.root / "conll-txt"
    txt.mkdir(exist_ok=True)
    for name in ("train.txt", "test.txt"):
        (txt / name).write_text("alice\tB-PER\nmet\tO\n\n" * 20)
    floats = [{"text": row["text"], "label": f"{0.5 + i * 0.25:.2f}"} for i, row in enumerate(synthetic_rows(90)) if i != 1] + [{"text": "w", "label": "0.50"}]
    bench = lambda *more: Case(["bench", "--model", f"m={w.model}", "--data", str(w.data), "--output", str(w.root / "bench-first"), *more])  # noqa: E731
    return {
        "bench-duplicate-name": lambda: bench("--model", f"m={w.model}"),
        "bench-stage-folder": lambda: Case(["bench", "--run", str(w.model), "--data", str(w.data)]),
        "bench-output-is-file": lambda: Case(["bench", "--model", f"m={w.model}", "--data", str(w.data), "--output",
                                              str(w.file("bench-file", "x") / "out"), "--threads", "1", "--rounds", "1", "--examples", "4"]),  # fmt: skip
        "data-folder-format": lambda: run(w.recipe("f1", {**fine("f1", data=txt), "task": "token-classification"})),
        "data-float-labels": lambda: run(w.recipe("f2", fine("f2", data=write_rows(w.root / "floats.csv", floats)))),
        "data-duplicate-column": lambda: run(w.recipe("f3", fine("f3", data=w.file("dup.csv", "text,label,text\n" + "a b,x,c\nd e,y,f\n" * 20)))),
        "student-larger": lambda: Case(["distill", "--teacher", str(w.model), "--num-layers", "3", "--data", str(w.data),
                                        "--output-dir", str(w.root / "runs"), "--name", "student-larger"]),  # fmt: skip
        "recipe-duplicate-key": lambda: run(w.recipe("f4", "finetune:\n  epochs: 1\nstages: [finetune]\nfinetune:\n  epochs: 3\n")),
        "recipe-folder": lambda: Case(["recipe", "check", str(txt)]),
        "name-empty": lambda: Case(["finetune", "--name", "", "--data", str(w.data), "--output-dir", str(w.root / "runs")]),
        "name-from-flag": lambda: run(w.recipe("f5", "stages: [finetune]\n"), "--name", "my run"),
        "threads-zero": lambda: bench("--threads", "0"),
        "list-override": lambda: run(w.recipe("f6", fine("f6")), "--set", "bench.batch_sizes=4"),
        "budget-value": lambda: run(w.recipe("f7", {**fine("f7"), "prune": {"budget": 0.4}})),
        "search-value": lambda: check("s1", space([0.5, 1.5])),
        "search-name": lambda: check("s2", {"space": {"name": ["a", "b"]}, "objectives": ["accuracy"]}),
        "search-empty": lambda: check("s3", space([])),
        "search-low-high": lambda: check("s4", space({"low": 0.75, "high": 0.25})),
        "search-log-zero": lambda: check("s5", {"space": {"finetune.learning_rate": {"low": 0, "high": 0.1, "log": True}}, "objectives": ["accuracy"]}),
        "search-reference": lambda: check("s6", {**space([0.5]), "reference": "nope.onnx"}),
        "gate-negative": lambda: Case(["gate", "--baseline", "a.json", "--current", "b.json", "--max-accuracy-drop", "-1"]),
        "gate-bare-number": lambda: Case(["gate", "--baseline", "a.json", "--current", "b.json", "--max-latency-regression", "10"]),
        "gate-two-modes": lambda: Case(["gate", "--base-model", "a.onnx", "--model", "b.onnx", "--baseline", "a.json", "--current", "b.json"]),
        "gate-ab-half": lambda: Case(["gate", "--base-model", "a.onnx"]),
        "gate-ab-missing-model": lambda: Case(["gate", "--base-model", str(w.root / "none.onnx"), "--model", str(w.root / "none.onnx")]),
    }


def _token_cases(w: World, run: Callable) -> dict[str, Callable[[], Case]]:
    """Token classification's bad files: each error names the file and line (or data row)."""
    tagged = lambda name, data, **extra: w.recipe(name, {**w.finetune(name, data=data), "task": "token-classification", **extra})  # noqa: E731
    good = "alice\tB-PER\nmet\tO\nbob\tB-PER\n\nrome\tB-LOC\nw1\tO\n\n" * 10
    split = w.root / "conll-split"
    split.mkdir(exist_ok=True)
    (split / "train.conll").write_text(good)
    (split / "dev.conll").write_text("alice\tB-PER\nacme\tB-ORG\n")
    return {
        "tokens-conll-columns": lambda: run(tagged("t1", w.file("cols.conll", "alice\tB-PER\nmet\n\n" + good))),
        "tokens-bad-tag": lambda: run(tagged("t2", w.file("tag.conll", good + "alice\tPER\n"))),
        "tokens-mismatch": lambda: run(tagged("t3", w.file("mismatch.jsonl", '{"tokens": ["a", "b", "c"], "tags": ["O", "B-PER"]}\n'))),
        "tokens-unseen-tag": lambda: run(tagged("t4", split)),
        "tokens-csv": lambda: run(tagged("t5", w.data)),
        "tokens-task-missing": lambda: run(w.recipe("t6", w.finetune("t6", data=w.file("notask.conll", good)))),
        "tokens-f1-macro": lambda: run(tagged("t7", split, finetune={"metric_for_best_model": "f1_macro"})),
        "tokens-model-task": lambda: Case(["export", "--model", str(w.model), "--data", str(w.file("export.conll", good)),
                                           "--task", "token-classification", "--output-dir", str(w.root / "runs"), "--name", "t8"]),  # fmt: skip
    }


def _needs_remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="customized-bert", auto_map={"AutoConfig": "custom.Config", "AutoModelForSequenceClassification": "custom.Model"})
    (folder / "config.json").write_text(json.dumps(config))


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_text("these are not weights")


def _corrupt_onnx(folder: Path) -> None:
    for name in ("model.onnx", "model_optimized.onnx"):
        (folder / name).write_text("not a protobuf")


def _graph_with_input_foo(folder: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["foo"], ["logits"], to=TensorProto.FLOAT)], "foo",
        [helper.make_tensor_value_info("foo", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(folder / "model.onnx"))


def _bench(w: World, path: Path) -> Case:
    return Case(["bench", "--model", f"m={path}", "--data", str(w.data), "--output", str(w.root / f"bench-{path.parent.name}"), "--no-torch"])


def _other_recipe(w: World) -> Case:
    runs = w.root / "runs" / "shared-name"
    runs.mkdir(parents=True)
    (runs / "recipe.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": "builtin:minilm-l6"}, "data": {"source": "builtin:bbc-news"}}))
    return Case(["run", w.recipe("other", w.finetune("shared-name"))])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when this returns: nothing listens there


def _browser_bench(w: World) -> Case:
    from test_runner import tiny_model

    onnx_model = w.model_copy("webmodel", lambda f: tiny_model(f / "model.onnx"))
    return Case(["bench", "--model", f"m={onnx_model / 'model.onnx'}", "--data", str(w.data), "--target", "browser",
                 "--browser-root", str(w.root / "no-browser"), "--output", str(w.root / "bench-browser")])  # fmt: skip


def _silent_ssh(w: World) -> Case:
    """A TCP port that accepts connections and never sends the SSH banner (a hung device)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
    config = w.file("ssh_config", f"Host silent\n  HostName 127.0.0.1\n  Port {server.getsockname()[1]}\n")
    from test_runner import tiny_model

    onnx_model = w.model_copy("sshmodel", lambda f: tiny_model(f / "model.onnx"))
    return Case(["bench", "--model", f"m={onnx_model / 'model.onnx'}", "--data", str(w.data), "--target", "ssh://silent",
                 "--ssh-config", str(config), "--output", str(w.root / "bench-ssh")])  # fmt: skip


def _interrupted(w: World) -> Case:
    recipe = w.finetune("sigint")
    recipe["finetune"] = {"epochs": 50, "max_seq_length": 16, "checkpoint_steps": 5}
    run = w.root / "runs" / "sigint"
    return Case(["run", w.recipe("sigint", recipe)], interrupt_when=lambda: any(run.glob(".01-finetune.partial-*/.checkpoints/*/checkpoint-*")))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_classifier) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    return World(root, tiny_classifier, write_rows(root / "topics.csv", synthetic_rows(90)))


def test_the_table_has_thirty_cases_or_more_and_each_has_a_test(world):
    assert len(ROWS) >= 30 and len({row[0] for row in ROWS}) == len(ROWS)
    assert {row[0] for row in ROWS} == set(_cases(world))
    assert f"lists the {len(ROWS)} bad\ninputs the tests run" in (ROOT / "README.md").read_text()  # the README's count is this table's


@pytest.mark.parametrize("case_id, exit_code, excerpt", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input(world, case_id, exit_code, excerpt):
    case = _cases(world)[case_id]()
    stderr, returncode = _run(case, world.root / f"{case_id}.stderr")
    # a progress bar the error interrupted may share its line: the text after its last carriage return, without escapes
    lines = [ANSI.sub("", line.split("\r")[-1]).strip() for line in stderr.strip().splitlines()]
    assert returncode == int(exit_code), stderr[-2000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and excerpt.replace("\\|", "|") in errors[0], stderr[-2000:]
    assert "Traceback" not in stderr
    runs = world.root / "runs"
    assert not [p for p in runs.rglob("*") if ".partial-" in p.name or ".tmp-" in p.name], "a partial artifact was left"
    assert all((p / "edgepress.json").is_file() for p in runs.glob("*/0*-*")), "a stage folder without its manifest"


def _run(case: Case, log: Path) -> tuple[str, int]:
    """The case as a process (its stderr to a file: a pipe nobody reads while it runs could fill)."""

    def limit() -> None:
        # a suite started in the background (`make test &`) runs with SIGINT ignored, which children
        # inherit and Python then never turns into KeyboardInterrupt: give the child the default
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if case.limit_file_size:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.limit_file_size, case.limit_file_size))

    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgepress", *case.argv], cwd=log.parent, stdout=subprocess.DEVNULL, stderr=err, text=True,
            preexec_fn=limit, env={**os.environ, "COLUMNS": "200", **(case.env or {})},
        )  # fmt: skip
        if case.interrupt_when:
            deadline = time.monotonic() + 120
            while not case.interrupt_when() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
        process.wait(timeout=180)
    return log.read_text(), process.returncode
