"""A self-contained classifier: raw text in, label and scores out, the tokenizer inside the graph.

The WordPiece tokenizer is onnxruntime-extensions' ``BertTokenizer`` op (domain ``ai.onnx.contrib``),
so a phone app ships one file and the extensions library instead of re-implementing BERT's
tokenizer in Java or Swift. The graph: ``text`` (string, shape [1]) -> BertTokenizer -> the model
(batch of one) -> ``logits`` [1, C], ``scores`` (softmax) [1, C], ``label`` (string) [1] and
``label_id`` [1]. Open it with the extensions library registered::

    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    session = onnxruntime.InferenceSession("model_with_tokenizer.onnx", options)
    label, scores = session.run(["label", "scores"], {"text": numpy.array(["a fine film"])})

We write the tokenizer node ourselves rather than through ``gen_processing_models``: its converter
reads ``strip_accents=None`` (BERT's "strip when lower-casing") as "do not strip", which splits
"naïve" differently from the Hugging Face tokenizer; and we need ``max_length`` for truncation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepress.errors import RecipeError, StageError
from edgepress.models import wordpiece_spec

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    from transformers import PreTrainedTokenizerBase

    from edgepress.data.load import SplitData

log = logging.getLogger(__name__)

CONTRIB = "ai.onnx.contrib"
SUFFIX = "_with_tokenizer.onnx"
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def bundle_name(model_file: str) -> str:
    """``model_int8_dynamic.onnx`` -> ``model_int8_dynamic_with_tokenizer.onnx``."""
    return model_file.removesuffix(".onnx") + SUFFIX


def check_installed() -> None:
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError as exc:
        raise RecipeError(f"with_tokenizer needs onnxruntime-extensions ({exc}); pip install onnxruntime-extensions") from exc


def build(model_path: Path, tokenizer: "PreTrainedTokenizerBase", labels: list[str], max_length: int) -> "onnx.ModelProto":
    """The model at ``model_path`` with the tokenizer in front and softmax/argmax/label names behind."""
    import onnx
    from onnx import compose, helper

    model = onnx.load(str(model_path))
    wanted = [i.name for i in model.graph.input]
    if set(wanted) - set(INPUTS):
        raise StageError(f"{model_path.name} has inputs {wanted}; a tokenizer can feed only {', '.join(INPUTS)}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    pre = _tokenizer_graph(tokenizer, max_length, opset, wanted)
    pre.ir_version = model.ir_version
    merged = compose.merge_models(pre, model, io_map=[(f"{name}_2d", name) for name in wanted], prefix2="model/")
    logits = merged.graph.output[0].name
    merged.graph.node.extend(_post_nodes(logits, labels))
    del merged.graph.output[:]
    merged.graph.output.extend([
        helper.make_tensor_value_info("label", onnx.TensorProto.STRING, [1]),
        helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, len(labels)]),
        helper.make_tensor_value_info("label_id", onnx.TensorProto.INT64, [1]),
        helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, len(labels)]),
    ])  # fmt: skip
    if not any(o.domain == "ai.onnx.ml" for o in merged.opset_import):
        merged.opset_import.append(helper.make_opsetid("ai.onnx.ml", 2))
    merged.graph.name = "edgepress text classifier with tokenizer"
    return merged


def _tokenizer_graph(tokenizer: "PreTrainedTokenizerBase", max_length: int, opset: int, wanted: list[str]) -> "onnx.ModelProto":
    import onnx
    from onnx import helper

    settings = _bert_settings(tokenizer)
    vocab = "\n".join(token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    nodes = [
        helper.make_node(
            "BertTokenizer", ["text"], [*INPUTS, "offset_mapping"], domain=CONTRIB, name="tokenizer",
            vocab_file=vocab, max_length=max_length, **settings,
        ),
        helper.make_node("Constant", [], ["batch_axis"], value=helper.make_tensor("batch_axis", onnx.TensorProto.INT64, [1], [0])),
    ]  # fmt: skip
    nodes += [helper.make_node("Unsqueeze", [name, "batch_axis"], [f"{name}_2d"]) for name in wanted]
    graph = helper.make_graph(
        nodes, "tokenizer",
        [helper.make_tensor_value_info("text", onnx.TensorProto.STRING, [1])],
        [helper.make_tensor_value_info(f"{name}_2d", onnx.TensorProto.INT64, [1, None]) for name in wanted],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)])


def _bert_settings(tokenizer: "PreTrainedTokenizerBase") -> dict[str, Any]:
    """The BertTokenizer op's attributes from a Hugging Face BERT tokenizer's normalizer and specials."""
    spec = wordpiece_spec(tokenizer, "with_tokenizer", "with_tokenizer")
    normalizer, model = spec.get("normalizer") or {}, spec["model"]
    if normalizer.get("type") != "BertNormalizer":
        raise RecipeError(f"with_tokenizer supports BERT's normalizer only; this tokenizer's is {normalizer.get('type')}: set it to false")
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    return {
        "do_lower_case": int(lowercase),
        "strip_accents": int(lowercase if strip is None else strip),  # None: strip when lower-casing, as BERT does
        "tokenize_chinese_chars": int(bool(normalizer.get("handle_chinese_chars", True))),
        "suffix_indicator": model.get("continuing_subword_prefix") or "##",
        "unk_token": tokenizer.unk_token, "sep_token": tokenizer.sep_token, "pad_token": tokenizer.pad_token,
        "cls_token": tokenizer.cls_token, "mask_token": tokenizer.mask_token,
    }  # fmt: skip


def _post_nodes(logits: str, labels: list[str]) -> list["onnx.NodeProto"]:
    from onnx import helper

    return [
        helper.make_node("Identity", [logits], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label_id"], axis=-1, keepdims=0),
        helper.make_node(
            "LabelEncoder", ["label_id"], ["label"], domain="ai.onnx.ml",
            keys_int64s=list(range(len(labels))), values_strings=list(labels), default_string="",
        ),
    ]  # fmt: skip


def open_bundle(path: Path, threads: int | None = None) -> "ort.InferenceSession":
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check(bundle: Path, model: Path, tokenizer, texts: list[str], max_length: int, atol: float) -> dict[str, Any]:
    """The bundle against the two-part pipeline (Hugging Face tokenizer, then the model) on ``texts``:
    the same predicted label on every text, logits within ``atol``; a StageError otherwise."""
    from edgepress.export.runtime import open_session

    with_tokenizer, plain = open_bundle(bundle), open_session(model)
    names = {i.name for i in plain.get_inputs()}
    worst, differ = 0.0, []
    for text in texts:
        encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        expected = plain.run(["logits"], {k: v.astype(np.int64) for k, v in encoded.items() if k in names})[0]
        logits, label_id = with_tokenizer.run(["logits", "label_id"], {"text": np.array([text])})
        worst = max(worst, float(np.abs(logits - expected).max()))
        if int(label_id[0]) != int(expected.argmax(-1)[0]):
            differ.append(text)
    if differ or worst > atol:
        raise StageError(
            f"{bundle.name} disagrees with the tokenizer + model pipeline (max |diff| {worst:.2e}, atol {atol}; "
            f"{len(differ)} of {len(texts)} predictions differ, e.g. {differ[:1]}); set with_tokenizer to false and report it"
        )
    return {"examples": len(texts), "max_abs_diff": worst, "same_predictions": len(texts)}


def write(model: Path, tokenizer, labels: list[str], texts: list[str], max_length: int, atol: float) -> dict[str, Any]:
    """Write ``<model>_with_tokenizer.onnx`` beside ``model`` and check it; returns its manifest entry."""
    import onnx

    check_installed()
    out = model.with_name(bundle_name(model.name))
    onnx.save(build(model, tokenizer, labels, max_length), str(out))
    report = check(out, model, tokenizer, texts, max_length, atol)
    log.info("%s: same predictions as tokenizer + %s on %d texts, max |diff| %.2e", out.name, model.name, len(texts), report["max_abs_diff"])
    return {"bytes": out.stat().st_size, "parity": report}


def write_for_stage(model: Path, tokenizer, data: "SplitData", max_length: int, atol: float, examples: int = 64) -> dict[str, Any]:
    """``write`` for a stage: the data's labels, parity on the first ``examples`` validation texts."""
    validation = data.split("validation")
    if "text_pair" in validation.column_names:
        raise RecipeError("with_tokenizer takes one text per call; this data has text pairs: set with_tokenizer to false")
    return write(model, tokenizer, list(data.labels), list(validation["text"][:examples]), max_length, atol)


def evaluate(path: Path, data: "SplitData", split: str = "test") -> dict[str, float]:
    """Accuracy and macro-F1 of a bundle on a split, one raw text per call."""
    from edgepress.tasks.text import classification_metrics

    session, rows = open_bundle(path), data.split(split)
    predicted = [int(session.run(["label_id"], {"text": np.array([text])})[0][0]) for text in rows["text"]]
    return classification_metrics(np.asarray(rows["label"]), np.asarray(predicted))
