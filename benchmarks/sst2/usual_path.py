"""The usual path, in the environment users of optimum have (transformers 4.57, optimum-onnx 0.1.0).

``export TEACHER OUT``: optimum's export of the teacher and its avx2 dynamic int8 quantization, as
optimum's docs show. ``open FOLDER FILE...``: each of edgepress's ONNX files opened with
``ORTModelForSequenceClassification`` and compared with plain ONNX Runtime on the same texts, to show
that edgepress's folders still serve optimum's users. Run by run.py with PYTHONPATH set (see
usual-path.txt); prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEXTS = ["a gripping , funny and moving film", "the plot is thin and the acting is worse ."]


def export(teacher: Path, folder: Path) -> dict:
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    fp32, int8 = folder / "fp32", folder / "int8"
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = ORTModelForSequenceClassification.from_pretrained(teacher, export=True)
    model.save_pretrained(fp32)
    ORTQuantizer.from_pretrained(model).quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=False), save_dir=int8)
    for target in (fp32, int8):  # beside each model, so that bench can tokenize for it
        tokenizer.save_pretrained(target)
    return {"fp32": str(fp32 / "model.onnx"), "int8": str(int8 / "model_quantized.onnx")}


def open_files(folder: Path, files: list[str]) -> dict:
    import numpy as np
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    opened = {}
    for name in files:
        model = ORTModelForSequenceClassification.from_pretrained(folder, file_name=name)
        via_optimum = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
        session = ort.InferenceSession(str(folder / name))
        encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
        plain = session.run(["logits"], {i.name: encoded[i.name] for i in session.get_inputs()})[0]
        opened[name] = {"max_abs_diff": float(np.abs(via_optimum - plain).max()), "labels": model.config.id2label}
    return opened


if __name__ == "__main__":
    import transformers

    command, folder, *rest = sys.argv[1:]
    result = export(Path(folder), Path(rest[0])) if command == "export" else open_files(Path(folder), rest)
    print(json.dumps({"transformers": transformers.__version__, **result}))
