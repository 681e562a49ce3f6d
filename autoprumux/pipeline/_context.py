"""What the stage helpers (`_baseline`, `_keys`, `_mux`, `_recovery`, `_stages`, `_students`)
see of a pipeline: `StageContext`, a protocol `PruMuxPipeline` satisfies. The helpers depend on
it, not on the pipeline class, so the package's imports run one way (the pipeline imports the
helpers, never the reverse). What the baseline computes once per pipeline and the helpers
reuse lives in one place, `TeacherTables`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from autoprumux._cache import ArtifactCache
from autoprumux.config import Candidate, MuxShape, Recipe
from autoprumux.data import Encoded, TaskData, TaskSpec
from autoprumux.evaluation import Evaluation, PairedPredictions, ThroughputConfig
from autoprumux.models import AnyModel, Int8Calibration, MuxSequenceClassifier, StudentEnsemble
from autoprumux.models._loading import BaseModel
from autoprumux.training import TeacherLayers

# `on_stage(step, dev loss, validation loss or None)`: a candidate's losses after one of its
# steps (`_baseline.stage_losses`), for a search's pruner; it may raise to abandon the candidate
StageReport = Callable[[int, float, float | None], None]


@dataclass
class TeacherTables:
    """The baseline's outputs the stages share, each computed (or read from the cache) once per
    pipeline: its logits for every training item, its per-layer states, the unlabeled corpus
    items recovery distils on (with their key), and its predictions and metrics per split."""

    logits: torch.Tensor | None = None
    layers: TeacherLayers | None = None
    unlabeled: tuple[list[Encoded], dict] | None = None
    # its predicted labels per scored split ("dev", "validation", "stopping", both held-out
    # splits), for paired SEs, and its metrics from them
    baseline_predictions: dict[str, PairedPredictions] = field(default_factory=dict)
    baseline_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


class StageContext(Protocol):
    """The pipeline as its stage helpers use it: the resolved recipe, the device, the cache, the
    task's data and items, the base model, the baseline and its tables, and the cache keys."""

    recipe: Recipe
    device: torch.device
    cache: ArtifactCache
    task: TaskSpec
    data: TaskData
    data_dir: str | None
    base: BaseModel
    tokenizer: Any
    max_seq_len: int
    train_items: list[Encoded]
    dev_items: list[Encoded]
    validation_items: list[Encoded]
    stopping_items: list[Encoded]  # the validation items unless the recipe holds out others
    untrained_texts: frozenset[str]  # the validation split's rows' texts, and their parts'
    special_ids: tuple[int, ...]
    head_rows: tuple[int, ...] | None
    mux_variant: str
    train_autocast: str
    warmup_corpus: str
    corpus_digest: str | None
    tables: TeacherTables

    # the baseline and the models the stages start from
    def baseline(self) -> MuxSequenceClassifier: ...
    def baseline_entry(self) -> Path: ...
    def fresh_model(self, n: int) -> MuxSequenceClassifier: ...
    def load_model(self, entry: Path, freeze_words: bool) -> MuxSequenceClassifier: ...
    def teacher_logits(self) -> torch.Tensor | None: ...
    def warmup_sentences(self) -> list[Encoded]: ...
    def students(self, k: int, depth: int) -> StudentEnsemble: ...
    def path_snapshot(self, sparsity: float) -> MuxSequenceClassifier: ...
    def candidate(
        self, config: Candidate, *, on_stage: StageReport | None = None
    ) -> MuxSequenceClassifier: ...

    def prumux_shape(self, config: Candidate) -> tuple[float, MuxShape]: ...

    # measuring
    def dev_metrics(self, model: AnyModel, pairings: int = ...) -> dict[str, float]: ...
    def baseline_metrics(self) -> dict[str, float]: ...
    def converted(self, model: AnyModel, precision: str) -> AnyModel: ...
    def int8_calibration(self, model: AnyModel) -> Int8Calibration: ...
    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None: ...
    def stage_training(self, config: Candidate) -> dict: ...
    def beside_baseline(
        self,
        name: str,
        model: AnyModel,
        tp: ThroughputConfig,
        training: dict | None = None,
        split: str = "validation",
    ) -> Evaluation: ...
