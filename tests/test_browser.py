"""The browser target: web-ready folders that transformers.js loads, ONNX models timed by
onnxruntime-web in headless Chromium, the demo page.

Real parts only: Debian's Chromium driven by Playwright, the pinned npm packages installed once by
`npm ci` (into .pytest_cache), a local server on 127.0.0.1, and for the demo page Python's own
`python -m http.server`. `make test` installs Chromium and npm when root with apt; where it could
not, these tests skip and say which package.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_schema_valid, require_system_tool
from typer.testing import CliRunner

from edgepress.cli.app import app

runner = CliRunner()
EXAMPLES = 8


@pytest.fixture(scope="module")
def web_run(browser_target, tmp_path_factory, tiny_classifier, tiny_csv) -> Path:
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe

    runs = tmp_path_factory.mktemp("web")
    outcomes = run_recipe(validate_recipe({
        "name": "web", "output_dir": str(runs), "stages": ["export", "quantize"],
        "model": {"name_or_path": str(tiny_classifier)}, "data": {"source": str(tiny_csv)},
        "export": {"max_seq_length": 24, "mobile": False, "web": True},
        "quantize": {"max_seq_length": 24, "calibration_samples": 64, "web": True},
    }))  # fmt: skip
    return outcomes[-1].folder.parent


def test_the_web_folder_has_the_layout_transformers_js_loads(web_run):
    import onnxruntime as ort

    web = web_run / "02-quantize" / "web"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "onnx/model.onnx", "onnx/model_quantized.onnx",
                 "index.html", "lib/transformers.min.js", "lib/ort-wasm-simd-threaded.asyncify.wasm", "edgepress.json"):  # fmt: skip
        assert (web / name).is_file(), name
    manifest = json.loads((web / "edgepress.json").read_text())
    assert manifest["dtypes"] == {"fp32": "onnx/model.onnx", "q8": "onnx/model_quantized.onnx"} and manifest["default_dtype"] == "q8"
    assert manifest["labels"] == ["politics", "sports", "tech"] and manifest["pipeline_task"] == "text-classification"
    assert manifest["max_seq_length"] == 24 and json.loads((web / "tokenizer_config.json").read_text())["model_max_length"] == 24
    # the int8 file is the quantize stage's dynamic one, byte for byte; the fp32 one the export's plain graph
    assert (web / "onnx/model_quantized.onnx").read_bytes() == (web_run / "02-quantize" / "model_int8_dynamic.onnx").read_bytes()
    assert (web / manifest["files"]["onnx/model.onnx"]["from"]).resolve() == (web_run / "01-export" / "model.onnx").resolve()
    ort.InferenceSession(str(web / "onnx/model_quantized.onnx"), providers=["CPUExecutionProvider"])
    stage = json.loads((web_run / "02-quantize" / "edgepress.json").read_text())["metrics"]["web"]
    assert stage["dtypes"] == manifest["dtypes"] and stage["runtimes"]["transformers_js"] == "4.3.2"
    assert json.loads((web_run / "01-export" / "web" / "edgepress.json").read_text())["dtypes"] == {"fp32": "onnx/model.onnx"}


@pytest.mark.slow
def test_the_demo_page_works_from_python_http_server(browser_target, web_run, tiny_csv, request):
    """Type a text, read the label and latency from the DOM; the page's predictions for the test
    texts equal ONNX Runtime's on the same files, fp32 and int8."""
    from edgepress.web.browser import Page, launched

    web = web_run / "02-quantize" / "web"
    texts = _test_texts(tiny_csv, 12)
    texts.append(" ".join(texts))  # far beyond the 24 tokens the folder was made for: the pipeline truncates
    with _http_server(web) as url, launched(browser_target.chromium) as browser:
        for dtype, file in (("fp32", "model.onnx"), ("q8", "model_quantized.onnx")):
            page = Page(browser, f"{url}/index.html?dtype={dtype}")
            expected = _ort_labels(web, file, texts)
            predicted = page.call("(texts) => window.edgepressPredict(texts)", texts)
            assert [p[0]["label"] for p in predicted] == expected
            assert all(abs(sum(s["score"] for s in p) - 1) < 1e-4 and len(p) == 3 for p in predicted)
            page.page.fill("#text", texts[0])
            page.page.click("#run")
            page.page.wait_for_selector("#result .latency")
            assert page.page.text_content("#result .label") == f"Predicted: {expected[0]}"
            assert re.fullmatch(r"[0-9.]+ ms in this browser \(tokenizer included\)", page.page.text_content("#result .latency"))
            assert f"Model {dtype} loaded" in page.page.text_content("#status") and not page.errors
            page.page.screenshot(path=str(request.config.cache.mkdir("screenshots") / f"demo-{dtype}.png"))
            page.close()


@pytest.mark.slow
def test_browser_bench_times_every_onnx_file_and_the_pipelines(browser_target, web_run, tiny_csv, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "bench", "--run", str(web_run), "--data", str(tiny_csv), "--target", "browser", "--threads", "1", "--threads", "2",
        "--examples", str(EXAMPLES), "--rounds", "4", "--max-seq-length", "24", "--output", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "bench.json").read_text())
    assert_schema_valid(document, "bench")
    env = document["environment"]
    assert env["target"] == "browser" and env["provider"] == "onnxruntime-web (wasm)"
    assert env["browser"]["cross_origin_isolated"] is True and env["browser"]["onnxruntime_web"].startswith("1.31")
    names = [a["name"] for a in document["artifacts"]]
    assert names == [
        "01-export/model.onnx", "01-export/model_optimized.onnx", "02-quantize/model_int8_dynamic.onnx",
        "02-quantize/model_int8_static.onnx", "01-export/web fp32 (transformers.js pipeline)",
        "02-quantize/web q8 (transformers.js pipeline)",  # quantize's fp32 copy is the export's file: timed once
    ]  # fmt: skip
    for row in document["artifacts"]:
        assert row["runtime"] == ("transformers.js" if row["kind"] == "web" else "onnxruntime-web")
        assert list(row["latency"]) == ["1", "2"] and row["latency"]["2"]["batch 1"]["runs"] == 4 * EXAMPLES
        assert row["agreement"]["argmax"] == 1.0 and row["agreement"]["examples"] == EXAMPLES
        assert row["agreement"]["max_abs_diff"] < (1e-4 if row["precision"] == "fp32" else 5e-2)
        assert row["test"]["accuracy"] >= 0.95  # the pipelines carry the accuracy of the file they copy
    assert document["settings"]["cases"] == ["batch 1"]
    report = (out / "report.md").read_text()
    assert "Chromium" in report and "predicted labels 100.0% the same" in report
    page = (out / "report.html").read_text()
    assert "02-quantize/web q8 (transformers.js pipeline): predicted labels 100.0% the same" in page and "<script" not in page
    gated = runner.invoke(app, ["gate", "--baseline", str(out / "bench.json"), "--current", str(out / "bench.json")])
    assert gated.exit_code == 0, gated.output


@pytest.mark.slow
def test_a_model_that_differs_in_the_browser_fails_the_agreement_check(browser_target, web_run, tiny_csv, tmp_path):
    """The served copy of the model has a tampered classifier bias; the one on this CPU does not."""
    from transformers import AutoTokenizer

    from edgepress.bench.artifacts import Artifact
    from edgepress.bench.measure import encoded_cases
    from edgepress.bench.targets import add_agreement
    from edgepress.errors import StageError
    from edgepress.recipe.deploy import BenchSection
    from edgepress.bench.browser import browser_outputs, run_models

    export = web_run / "01-export"
    tampered = _tamper_bias(export / "model.onnx", tmp_path / "tampered.onnx")
    examples = encoded_cases(AutoTokenizer.from_pretrained(export), {"text": _test_texts(tiny_csv, EXAMPLES)}, BenchSection(max_seq_length=24))["batch 1"]
    results = run_models(browser_target, {"good": (export / "model.onnx", examples), "bad": (tampered, examples)}, [1], 1, 0)
    outputs = browser_outputs(results[1])
    artifact = Artifact("01-export/model.onnx", "onnx", export / "model.onnx", export)
    good, bad = [{"name": "served as is"}], [{"name": "served tampered"}]
    add_agreement(good, [artifact], {artifact.name: "good"}, examples, outputs, 0.99)
    assert good[0]["agreement"]["argmax"] == 1.0
    with pytest.raises(StageError, match=r"served tampered \d+\.\d% agree .*would predict differently there"):
        add_agreement(bad, [artifact], {artifact.name: "bad"}, examples, outputs, 0.99)


@pytest.mark.slow
def test_a_vocabulary_trimmed_tagger_runs_in_transformers_js(browser_target, tmp_path, tiny_ner_bert, tiny_conll, request):
    """Token classification: the pipeline tags every token as ONNX Runtime does; the demo page shows
    a tag per word and never renders model output as HTML."""
    from edgepress.recipe.loading import validate_recipe
    from edgepress.running.pipeline import run_recipe
    from edgepress.web.browser import Page, launched
    from edgepress.bench.browser import WebFolder, pipeline_agreement

    training = {"learning_rate": 3e-3, "epochs": 6, "batch_size": 16, "max_seq_length": 24, "logging_steps": 50}
    outcomes = run_recipe(validate_recipe({
        "name": "ner", "output_dir": str(tmp_path / "runs"), "task": "token-classification",
        "stages": ["finetune", "prune", "export", "quantize"],
        "model": {"name_or_path": str(tiny_ner_bert)}, "data": {"source": str(tiny_conll)},
        "finetune": training, "prune": {**training, "epochs": 1, "heads": 0.5, "ffn": 0.5, "vocabulary": {"trim": True}},
        "export": {"max_seq_length": 24, "mobile": False}, "quantize": {"max_seq_length": 24, "static": False, "web": True},
    }))  # fmt: skip
    web = outcomes[-1].folder / "web"
    vocabulary = json.loads((web / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocabulary) < len(json.loads((tiny_ner_bert / "tokenizer.json").read_text())["model"]["vocab"])  # trimmed
    sentences = [" ".join(words) for words in _conll_sentences(tiny_conll / "test.conll", 10)]
    with _http_server(web) as url, launched(browser_target.chromium) as browser:
        for dtype, file in (("fp32", "model.onnx"), ("q8", "model_quantized.onnx")):
            page = Page(browser, f"{url}/index.html?dtype={dtype}")
            predicted = page.call("(texts) => window.edgepressPredict(texts)", sentences)
            agreement = pipeline_agreement(predicted, _ort_logits(web, file, sentences), WebFolder(web, "ner", {}, {}, "token-classification", 24))
            assert agreement["argmax"] == 1.0, agreement
            page.close()
        page = Page(browser, f"{url}/index.html")
        page.page.fill("#text", "<img src=x onerror=window.pwned=1> alice met bob in londonish")  # 21 tokens of the 24
        page.page.click("#run")
        page.page.wait_for_selector("#result .latency")
        tags = dict(page.page.evaluate("() => [...document.querySelectorAll('#result .word')].map((w) => [w.firstChild.textContent, w.lastChild.textContent])"))
        assert tags["alice"] == "B-PER" and tags["londonish"] == "B-LOC" and tags["met"] == "O"  # london + ##ish: one word
        assert page.page.locator("#result img").count() == 0 and page.page.evaluate("() => window.pwned") is None
        page.page.screenshot(path=str(request.config.cache.mkdir("screenshots") / "demo-tagger.png"))


def test_the_local_server_isolates_and_stays_in_its_folders(tmp_path):
    from edgepress.web.server import serving

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("no")
    with serving({"/lib/": tmp_path / "site"}) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/lib/a.wasm") as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"] == "application/wasm"
        for path in ("/lib/../secret.txt", "/lib/%2e%2e/secret.txt", "/secret.txt"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{url}{path}")


def test_setup_without_npm_names_the_package(tmp_path, monkeypatch):
    from edgepress.web.target import find_chromium

    require_system_tool(find_chromium() is not None, "Chromium", "chromium")
    monkeypatch.setenv("EDGEPRESS_CHROMIUM", find_chromium())
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it: no npm
    result = runner.invoke(app, ["targets", "setup", "browser", "--dir", str(tmp_path / "browser")])
    assert result.exit_code == 1 and "npm is not installed; install Node.js with npm (apt-get install npm)" in result.output
    assert not (tmp_path / "browser").exists() and not (tmp_path / "browser.partial").exists()


# --------------------------------------------------------------------------- helpers


def _test_texts(data: Path, count: int) -> list[str]:
    from edgepress.data.load import load_data
    from edgepress.recipe.sections import DataSection

    return list(load_data(DataSection(source=str(data))).test.to_dict()["text"][:count])


def _conll_sentences(path: Path, count: int) -> list[list[str]]:
    blocks = path.read_text().strip().split("\n\n")[:count]
    return [[line.split("\t")[0] for line in block.splitlines()] for block in blocks]


def _ort_logits(web: Path, file: str, texts: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(web)
    session = ort.InferenceSession(str(web / "onnx" / file), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    # truncated at the folder's model_max_length, as the pipeline truncates
    return [session.run(None, {k: v for k, v in tokenizer(t, truncation=True, return_tensors="np").items() if k in names})[0] for t in texts]


def _ort_labels(web: Path, file: str, texts: list[str]) -> list[str]:
    labels = json.loads((web / "config.json").read_text())["id2label"]
    return [labels[str(int(logits[0].argmax()))] for logits in _ort_logits(web, file, texts)]


def _tamper_bias(source: Path, target: Path) -> Path:
    """A copy whose classifier bias favours class 0 by 100: it predicts class 0 for everything."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    labels = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value or 3
    (bias,) = [t for t in model.graph.initializer if "classifier" in t.name and "bias" in t.name and list(t.dims) == [labels]]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 100
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(target))
    return target


class _http_server:
    """`python -m http.server` in ``folder`` on 127.0.0.1 (what the README tells users to run)."""

    def __init__(self, folder: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder

    def __enter__(self) -> str:
        self.process = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"], cwd=self.folder,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/edgepress.json").close()
                return url
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("python -m http.server did not start")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
