"""The recipe's deployment sections: export, quantize and bench (see sections.py for the rest)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from edgepress.recipe.sections import Section


class ExportSection(Section):
    """ONNX export of the previous stage's model, checked against torch, plus optimized, fp16 and mobile variants."""

    exporter: Literal["auto", "torch", "torchscript", "optimum"] = Field(
        "auto",
        description="torch: torch.onnx.export(dynamo=True); torchscript: its older TorchScript exporter; optimum: "
        "optimum-onnx's exporter, where installed (it needs transformers < 4.58); auto: torch.",
    )
    opset: int = Field(18, ge=14, le=21, description="ONNX opset of the exported graph.")
    max_seq_length: int = Field(128, gt=0, le=8192, description="Texts are truncated to this many tokens for the checks.")
    parity_examples: int = Field(
        8, ge=2, le=256, description="Real validation texts of spread-out lengths run through torch and ONNX Runtime."
    )
    atol: float = Field(1e-4, gt=0, description="Largest allowed |torch - ONNX| logit difference for fp32 graphs.")
    optimize: bool = Field(
        True, description="Also write model_optimized.onnx with attention, LayerNorm and GELU fused into ONNX Runtime's contrib operators."
    )
    fp16: bool = Field(False, description="Also write model_fp16.onnx (fp16 weights and math, fp32 inputs/outputs) for GPUs.")
    fp16_atol: float = Field(2e-2, gt=0, description="Largest allowed logit difference for the fp16 graph.")
    mobile: bool = Field(True, description="Also write the ORT mobile format (.ort) and its required-operators config.")
    with_tokenizer: bool = Field(
        False, description="Also write model_optimized_with_tokenizer.onnx: text in, label and scores out (onnxruntime-extensions)."
    )
    eval_batch_size: int = Field(64, gt=0, description="Batch size of the ONNX Runtime accuracy evaluation.")
    web: bool = Field(
        False,
        description="Also write web/: the fp32 graph in the layout transformers.js loads (onnx/model.onnx, config, tokenizer), "
        "with a demo page and the runtimes it needs (set up with `edgepress targets setup browser`).",
    )

    @model_validator(mode="after")
    def _variants_need_the_optimized_graph(self) -> "ExportSection":
        if (self.fp16 or self.mobile) and not self.optimize:
            raise ValueError("fp16 and mobile are made from the optimized graph; set optimize: true or turn them off")
        return self


class QuantizeSection(Section):
    """int8 variants of the exported fp32 ONNX model, checked against it on the validation split."""

    backend: list[Literal["onnxruntime", "neural-compressor", "openvino"]] = Field(
        ["onnxruntime"],
        description="One or more of: onnxruntime: int8 ONNX files from the exported graph; neural-compressor: int8 PyTorch "
        "models (Intel Neural Compressor 3.x, torch.export + Inductor) from the torch model the export read; openvino: "
        "OpenVINO IR of the exported graph and its NNCF int8 model (pip install 'edgepress[openvino]'). A single name is a "
        "list of one; both: [onnxruntime, neural-compressor].",
    )
    openvino_bf16: bool = Field(
        True, description="openvino: on CPUs with bf16 (AMX, AVX-512 BF16), also score the IR run in bf16, so bench can offer it."
    )
    dynamic: bool = Field(True, description="Write model_int8_dynamic.onnx: int8 weights, activations quantized at run time.")
    static: bool = Field(True, description="Write model_int8_static.onnx: int8 weights and calibrated int8 activations.")
    target: Literal["auto", "avx2", "avx512", "avx512_vnni", "arm64"] = Field(
        "auto", description="Hardware preset for types and ranges; auto: this machine's CPU. See the README for the reasons."
    )
    format: Literal["QDQ", "QOperator"] = Field("QDQ", description="Static graph format: QuantizeLinear/DequantizeLinear pairs, or integer ops.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="How activation ranges are found.")
    calibration_samples: int = Field(128, gt=0, description="Training texts run through the model to calibrate activation ranges.")
    calibration_padding: Literal["longest", "max_length"] = Field(
        "longest",
        description="Pad each calibration batch to its longest text (ranges of real tokens), or every text to max_seq_length.",
    )
    per_channel: Optional[bool] = Field(None, description="One scale per output channel of each weight; default: the preset's.")
    activation_type: Optional[Literal["uint8", "int8"]] = Field(None, description="Static activation type; default: the preset's.")
    weight_type: Optional[Literal["int8", "uint8"]] = Field(None, description="Weight type; default: the preset's.")
    reduce_range: Optional[bool] = Field(None, description="7-bit weights, against int16 saturation on x86 without VNNI; default: the preset's.")
    exclude_op_types: list[str] = Field([], description="Op types left in fp32, e.g. [Attention].")
    exclude_nodes: list[str] = Field([], description="Node names left in fp32.")
    tolerance: float = Field(
        0.01, ge=0, lt=1, description="Largest allowed relative validation-accuracy drop against the fp32 ONNX model."
    )
    tune: bool = Field(True, description="When the configured variant misses the tolerance, try others (see the README).")
    with_tokenizer: bool = Field(
        False, description="Also write model_int8_<mode>_with_tokenizer.onnx: text in, label and scores out (onnxruntime-extensions)."
    )
    max_trials: int = Field(8, gt=0, le=64, description="Configurations tried per variant, the configured one included.")
    select: Literal["first", "most_accurate"] = Field(
        "first",
        description="onnxruntime: keep the first setting within the tolerance (the recipe's own when it passes), or try every "
        "setting that keeps all nodes int8 (per-channel, calibration method, weight range; up to max_trials) and keep the most "
        "accurate on validation, the faster at a tie. Scored at deployment_batch_size.",
    )
    web: bool = Field(
        False,
        description="Also write web/: the export's fp32 graph and the dynamic int8 one (transformers.js's q8, "
        "onnx/model_quantized.onnx) in the layout transformers.js loads, with a demo page and the runtimes it needs.",
    )
    max_seq_length: int = Field(128, gt=0, le=8192, description="Texts are truncated (calibration: padded) to this many tokens.")
    eval_batch_size: int = Field(64, gt=0, description="Batch size of the accuracy evaluations when deployment_batch_size is 0.")
    deployment_batch_size: int = Field(
        1, ge=0,
        description="The batch size the int8 models will serve at; their accuracy, and the choice among settings, is scored "
        "at it (dynamic int8 scales each batch's activations together, so padding and neighbours change outputs). "
        "0: score at eval_batch_size, faster on large splits.",
    )  # fmt: skip

    @field_validator("backend", mode="before")
    @classmethod
    def _one_or_more_backends(cls, value: object) -> object:
        if isinstance(value, str):  # one name, "both", or a comma-separated list (the CLI's --backend)
            return ["onnxruntime", "neural-compressor"] if value == "both" else [v.strip() for v in value.split(",")]
        return value

    @property
    def scoring_batch_size(self) -> int:
        return self.deployment_batch_size or self.eval_batch_size

    @model_validator(mode="after")
    def _something_to_do(self) -> "QuantizeSection":
        if not self.backend or len(set(self.backend)) != len(self.backend):
            raise ValueError("backend must name each of onnxruntime, neural-compressor, openvino at most once, and at least one")
        if not (self.dynamic or self.static) and set(self.backend) & {"onnxruntime", "neural-compressor"}:
            raise ValueError("dynamic and static are both false; turn on at least one")
        if self.web and not (self.dynamic and "onnxruntime" in self.backend):
            raise ValueError("web carries the dynamic int8 ONNX file; it needs backend onnxruntime and dynamic: true")
        if self.select == "most_accurate" and not self.tune:
            raise ValueError("select: most_accurate searches the settings and tune is false; set tune: true, or select: first")
        return self


class BenchSection(Section):
    """Latency, throughput, memory, size and accuracy of every artifact of the run, side by side."""

    target: str = Field(
        "cpu",
        description="cpu: this machine (ONNX Runtime CPU provider; PyTorch for torch models); cuda: an NVIDIA GPU (torch fp32 "
        "and fp16; ONNX Runtime's CUDA provider, from onnxruntime-gpu); ssh://[user@]host[:port]: a device with python3, "
        "numpy and onnxruntime (ONNX models only); arm64-emulated: ONNX models under qemu on arm64 kernels, to check "
        "they predict the same (latencies marked emulated; set up with `edgepress targets setup arm64-emulated`); browser: "
        "ONNX models in onnxruntime-web (WebAssembly) in headless Chromium, and the transformers.js pipeline of the run's "
        "web-ready folders (set up with `edgepress targets setup browser`).",
    )
    ssh_config: Optional[str] = Field(None, description="ssh config file for an ssh target; default: the user's ~/.ssh/config.")
    remote_python: str = Field("python3", description="Python on the ssh device.")
    emulator_root: Optional[str] = Field(None, description="Folder of the arm64-emulated target; default: ~/.cache/edgepress/arm64-emulated.")
    browser_root: Optional[str] = Field(None, description="Folder of the browser target (its npm packages); default: ~/.cache/edgepress/browser.")
    min_agreement: float = Field(
        0.99, ge=0, le=1, description="ssh, arm64-emulated and browser: least fraction of timed texts whose predicted class on the target matches this "
        "machine's (for a tagger, every token of the text).",
    )
    tensorrt: bool = Field(False, description="cuda: put ONNX Runtime's TensorRT provider first (builds an engine per input shape).")
    threads: Optional[list[int]] = Field(None, description="Intra-op thread counts to measure; default: 1 and every core.")
    examples: int = Field(64, gt=0, description="Test texts timed per round (batch 1 on their real lengths).")
    batch_sizes: list[int] = Field([8, 32], description="Also time these batch sizes, padded to max_seq_length.")
    rounds: int = Field(5, gt=0, description="Interleaved passes over the examples per artifact.")
    warmup: int = Field(3, ge=0, description="Untimed calls per artifact before the first round.")
    max_seq_length: int = Field(128, gt=0, le=8192, description="Texts are truncated (and batches padded) to this many tokens.")
    torch: bool = Field(True, description="Also time the torch artifacts (finetune, distill, prune) with PyTorch.")
    deployment_batch_size: int = Field(
        1, ge=0,
        description="Models no stage scored (named on the command line) are scored on the test split at this batch size when "
        "they are ONNX or INC files (dynamic int8 depends on the batch; as quantize.deployment_batch_size). 0: batches of 64.",
    )  # fmt: skip
    tolerance: float = Field(
        0.01, ge=0, lt=1,
        description="The report names the fastest artifact per thread count and batch among those whose test score is within "
        "this relative drop of the reference (the most accurate fp32 ONNX or OpenVINO row; else the most accurate row).",
    )  # fmt: skip

    @property
    def scoring_batch_size(self) -> int:
        return self.deployment_batch_size or 64

    @model_validator(mode="after")
    def _positive_settings(self) -> "BenchSection":
        if self.target not in ("cpu", "cuda", "arm64-emulated", "browser") and not (self.target.startswith("ssh://") and len(self.target) > len("ssh://")):
            raise ValueError(f"target {self.target!r} is not available; use cpu, cuda, arm64-emulated, browser or ssh://[user@]host[:port]")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise ValueError("threads must list positive thread counts, e.g. [1, 4]")
        if any(b < 2 for b in self.batch_sizes):
            raise ValueError("batch_sizes are the padded batches beyond batch 1; give sizes of 2 or more")
        return self
