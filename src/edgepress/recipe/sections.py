"""The recipe's sections: one pydantic model per stage, every field with a default and a description.

Here: the shared base and the model and data sections. The training stages (finetune, distill,
prune) are in training.py, the deployment stages (export, quantize, bench) in deploy.py, the
search in search.py."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    name_or_path: str = Field(
        "builtin:minilm-l6",
        description="Teacher to start from: a local folder, a Hub id, or builtin:minilm-l6.",
    )
    revision: Optional[str] = Field(
        None, description="Hub revision (branch, tag or commit); pin a commit for reproducible runs."
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with a Hub repo. Only turn on for repos you trust."
    )
    allow_pickle: bool = Field(
        False, description="Accept pickle weights (pytorch_model.bin). Pickle can execute code on load."
    )


class DataSection(Section):
    source: str = Field(
        "builtin:bbc-news",
        description="A csv/tsv/jsonl/parquet file, a folder with train/validation/test files, "
        "a Hub dataset id, or builtin:bbc-news.",
    )
    train_file: Optional[str] = Field(None, description="Explicit training file (overrides source).")
    validation_file: Optional[str] = Field(
        None, description="Explicit validation file; split off the training data when absent."
    )
    test_file: Optional[str] = Field(
        None, description="Explicit test file; split off the training data when absent."
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = Field(
        "auto", description="File format; auto picks it from the file extension."
    )
    header: bool = Field(
        True, description="csv/tsv files have a header row. If false, name columns by position: '0', '1', ..."
    )
    text_column: str = Field("text", description="Column with the input text.")
    text_pair_column: Optional[str] = Field(
        None, description="Second text column for sentence-pair tasks (NLI, paraphrase)."
    )
    label_column: str = Field("label", description="Column with the label, as int or string.")
    tokens_column: str = Field("tokens", description="Token classification: column with each sentence's list of words (JSONL, Parquet, Hub).")
    tags_column: Optional[str] = Field(
        None, description="Token classification: column with one tag per word; unset: 'tags', else 'ner_tags' (the Hub's name)."
    )
    conll_tag_column: int = Field(
        -1, description="Token classification: which whitespace-separated column of a CoNLL line holds the tag (-1: the last)."
    )
    label_all_pieces: bool = Field(
        False, description="Token classification: train on every piece of a word (default: the first piece only, the others ignored)."
    )
    entity_matching: Literal["strict", "lenient"] = Field(
        "strict", description="Token classification: strict IOB2 entities (seqeval mode='strict'), or lenient conlleval-style matching."
    )
    hub_subset: Optional[str] = Field(None, description="Hub dataset configuration name, e.g. 'sst2' of 'glue'.")
    hub_revision: Optional[str] = Field(None, description="Hub dataset revision.")
    validation_size: float = Field(
        0.15, gt=0, lt=1, description="Fraction split off for validation when no validation split is given."
    )
    test_size: float = Field(
        0.15, gt=0, lt=1, description="Fraction split off for test when no test split is given."
    )
    split_seed: int = Field(42, description="Seed of the stratified train/validation/test split.")
    max_train_samples: Optional[int] = Field(
        None, gt=0, description="Use at most this many training examples (a seeded sample); for quick trials."
    )

    @model_validator(mode="after")
    def _sizes_leave_training_data(self) -> "DataSection":
        if self.validation_size + self.test_size >= 0.9:
            raise ValueError(
                f"validation_size + test_size = {self.validation_size + self.test_size:.2f} leaves "
                "too little training data; keep the sum below 0.9"
            )
        return self


class TrackingSection(Section):
    """Where the training stages' curves go besides their own ``curves.json`` (always written):
    the dashboards of Transformers' integrations, one run per training run, the resolved recipe as
    its parameters. Changing it re-runs nothing: it is not part of any stage's fingerprint."""

    report_to: list[str] = Field(
        [], description="Dashboards to log to: tensorboard, mlflow, or any other Transformers integration by name (wandb, trackio, ...)."
    )
    tensorboard_dir: Optional[str] = Field(
        None, description="Folder for TensorBoard event files, one subfolder per training run. Default: <run folder>/tensorboard."
    )
    mlflow_tracking_uri: Optional[str] = Field(
        None, description="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else a SQLite store, <run folder>/mlflow.db."
    )
    experiment: Optional[str] = Field(None, description="MLflow experiment name. Default: the run name.")

    @model_validator(mode="after")
    def _names_once(self) -> "TrackingSection":
        if len(set(self.report_to)) != len(self.report_to):
            raise ValueError("report_to lists a dashboard twice; list each once")
        if {"none", "all"} & set(self.report_to):
            raise ValueError("report_to takes dashboard names (tensorboard, mlflow, ...); leave it empty for none")
        return self
