"""Configuration: what a user chooses, each value checked once where it enters.

Torch-free on purpose: the CLI, the search space and the meta-model read these without loading
the models. `Recipe` is the training recipe (steps and rates; part of every cache key); `Candidate` one
configuration the search can evaluate (technique; sparsity, N and mux variant for PruMUX; K and
depth for Academus students); `check_budget` the accuracy-loss budget. Everything after this
module trusts them: dicts appear only at the edges (YAML, MLflow params, JSON).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from autoprumux._rules import COUNT, FLAG, FRACTION, LR, STEPS, WEIGHT, Rule
from autoprumux.errors import ConfigError

# ---- names and limits shared across the package ---------------------------------------------
# numeric precision at inference; which a device offers (the CPU: dynamic int8 of the linear
# layers; CUDA: TF32 matmuls, bf16, fp16)
PRECISIONS = ("fp32", "int8", "tf32", "bf16", "fp16")
DEVICE_PRECISIONS = {"cpu": ("fp32", "int8"), "cuda": ("fp32", "tf32", "bf16", "fp16")}
# each precision's distance from fp32 (loss and speed do not fall as it rises; bf16 = fp16)
PRECISION_RANK = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 2, "int8": 3}
TASK_NAMES = ("cola", "mrpc", "qnli", "sst2")  # the built-in GLUE tasks (see autoprumux.data)
TECHNIQUES = ("prumux", "students")
MUX_VARIANTS = ("gaussian", "orthogonal")
# how N instances combine: fixed binding (the mux variant) + average, or learned projections
# to H/N, concatenated ("concat_skip": the demux also reads each instance's pre-combiner states)
MUX_COMBINERS = ("binding", "concat", "concat_skip")
SPLIT_COMBINERS = MUX_COMBINERS[1:]  # they project to H/N: N must divide the hidden size
POOLINGS = ("cls", "mean")
MAX_MUX = 64  # DataMUX reports usable accuracy up to N=40
MAX_MUX_LAYERS = 64  # an upper bound on any encoder's depth; the model's own is checked on build
MAX_STUDENTS = 16
STUDENT_DEPTHS = (1, 2, 3)
LOGIT_LOSSES = ("mse", "kl")  # students distil by MSE on the residual or KL around the sum
STUDENT_INITS = ("bottom", "spread")  # student j's first layer: the teacher's lowest, or spread
RECOVERY_SCHEDULES = ("even", "rising")  # recovery steps per pruning stage
SAMPLERS = ("tpe", "guided", "random", "grid")
TRAINERS = ("standard", "l2l", "auto")
STASH_PLACES = ("device", "host")
L2L_CLIP_MODES = ("global", "stage", "previous")
# how training draws its batches: shuffled, or shuffled pools sorted by length (less padding)
BATCHINGS = ("random", "grouped")
# the precision of the training loop's forward (weights, gradients and optimizer stay fp32);
# "auto": bf16 where the device multiplies bf16 natively (see training.resolve_autocast)
TRAIN_AUTOCASTS = ("auto", "fp32", "bf16")


def validate_trainer(
    trainer: object, micro_batches: object, stash: object, batch_size: int
) -> None:
    """Check the trainer choice (shared by `Recipe`, `TrainConfig` and `L2LExecutor`)."""
    if trainer not in TRAINERS:
        raise ConfigError(
            f"trainer ({trainer!r}) must be one of {list(TRAINERS)}; use 'l2l' for the "
            "layer-to-layer trainer with constant device memory, 'auto' for the standard loop "
            "that retries with 'l2l' when the device runs out of memory"
        )
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ConfigError(
            f"micro_batches ({micro_batches!r}) must be a positive integer, e.g. 4 (1 = the "
            "whole batch at once)"
        )
    if stash not in STASH_PLACES:
        raise ConfigError(
            f"stash ({stash!r}) must be one of {list(STASH_PLACES)}; 'host' keeps device "
            "memory independent of depth, 'device' avoids the copies"
        )
    if trainer in ("l2l", "auto") and batch_size % micro_batches:
        raise ConfigError(
            f"batch size ({batch_size}) must be a multiple of the L2L micro-batch count "
            f"({micro_batches}); choose a divisor of {batch_size} or another batch size"
        )


# ---- the training recipe ------------------------------------------------------------------------
# one rule per Recipe field (`Recipe.__post_init__` fails on a field without one)
_RECIPE_RULES: dict[str, Rule] = {
    "max_seq_len": Rule(int, low=8, none="long enough for 99% of the training examples"),
    "max_train_examples": Rule(int, low=1, none="all examples"),
    "validation_examples": Rule(int, low=0, none="10% of train, 8+ per class, at most 2,000"),
    "eval_every": COUNT,
    "patience": COUNT,
    "min_delta": Rule(float, low=0.0),
    "plateau_anneal": Rule(float, low=0.0, high=4.0),
    "batch_size": COUNT,
    "lr": LR,
    "finetune_steps": STEPS,
    "mux_warmup_steps": STEPS,
    "mux_warmup_lr": LR,
    "warmup_corpus_size": Rule(int, low=0),
    "mux_finetune_steps": STEPS,
    "mux_finetune_lr": LR,
    "retrieval_weight": FRACTION,
    "distill_weight": FRACTION,
    "recovery_steps": STEPS,
    "recovery_layer_distill": WEIGHT,
    "int8_recovery_steps": STEPS,
    "recovery_unlabeled": Rule(int, low=0),
    "recovery_schedule": Rule(str, choices=RECOVERY_SCHEDULES),
    "mux_pooling": Rule(str, choices=POOLINGS),
    "warmup_hidden_distill": WEIGHT,
    "mux_hidden_distill": WEIGHT,
    "warmup_from_smaller": FLAG,
    "late_mux_freeze_backbone": FLAG,
    "late_mux_align": WEIGHT,
    "late_mux_lr": LR,
    "late_mux_shared_lr": Rule(float, low=0.0),  # 0: the shared layers stay frozen
    "student_steps": STEPS,
    "student_stacking_steps": STEPS,
    "student_stacking_focus": FRACTION,
    "student_lr": LR,
    "student_loss": Rule(str, choices=LOGIT_LOSSES),
    "student_init": Rule(str, choices=STUDENT_INITS),
    "student_pooling": Rule(str, choices=POOLINGS),
    "student_unlabeled": Rule(int, low=0),
    "prune_stages": COUNT,
    "importance_examples": COUNT,
    "freeze_word_embeddings": FLAG,
    "seed": Rule(int, low=0, high=2**32 - 1),  # numpy-compatible seed range
    "batching": Rule(str, choices=BATCHINGS),
    "train_autocast": Rule(str, choices=TRAIN_AUTOCASTS),
    "trainer": Rule(str, choices=TRAINERS),
    "l2l_micro_batches": COUNT,
    "l2l_stash": Rule(str, choices=STASH_PLACES),
}


@dataclass(frozen=True)
class Recipe:
    """The training recipe of a baseline and its candidates (part of every cache key)."""

    max_seq_len: int | None = None  # None: from the data (see pipeline._baseline)
    max_train_examples: int | None = None  # None: all of them
    # training examples held out as the validation split (stratified, a seed of its own; see
    # data._validation): None sizes it from train, 0 holds none out (the baseline trains its cap)
    validation_examples: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    # the baseline's task fine-tune: at most finetune_steps, stopped once the validation metric
    # has not risen by more than min_delta points in `patience` evaluations, one every
    # eval_every steps; it keeps its best evaluation's weights. A baseline trained short of its
    # plateau understates every candidate's accuracy loss. The candidates' stages (each pruning
    # recovery, the mux fine-tunes, each student and the stacking) stop by the same rule: their
    # step counts below are caps (`training.StoppingRule`). At the plateau the LR decays
    # linearly to 0 over plateau_anneal x the steps trained so far (whole evaluation intervals),
    # still validated, then the run stops (0: it stops at the plateau)
    finetune_steps: int = 10000
    eval_every: int = 200
    patience: int = 5
    min_delta: float = 0.0
    plateau_anneal: float = 0.5
    mux_warmup_steps: int = 400  # token-retrieval warm-up per N (0 = none)
    mux_warmup_lr: float = 2e-4
    warmup_corpus_size: int = 20000  # unlabeled sentences for the warm-up (deterministic subsample)
    mux_finetune_steps: int = 1000
    mux_finetune_lr: float = 3e-4  # the N > 1 encoder must learn to demultiplex: more, faster steps
    retrieval_weight: float = 0.1  # kept during the mux task fine-tune (DataMUX: 0.9 task + 0.1)
    distill_weight: float = 0.5  # KD from the baseline during mux fine-tune and pruning recovery
    recovery_steps: int = 150
    # + weight x layer-wise distillation in the recovery of N=1 candidates: each kept layer's
    # token states against the baseline layer it maps to (CoFi's layer distillation)
    recovery_layer_distill: float = 0.0
    # an int8 candidate's distillation steps trained as int8 conversion computes (fake-quantized
    # weights and inputs) before it is converted; 0: converted as trained
    int8_recovery_steps: int = 0
    # warm-up corpus sentences added to the pruning recovery, distilled without a task loss
    recovery_unlabeled: int = 0
    # recovery_steps per pruning stage: "even", or "rising" (in proportion to the stage number)
    recovery_schedule: str = "even"
    # mux options (defaults: the best measured, see BENCHMARKS.md)
    mux_pooling: str = "mean"  # what the N>1 task head reads: demuxed [CLS] or mean of tokens
    warmup_hidden_distill: float = 1.0  # + weight x hidden-state distillation from the N=1 base
    mux_hidden_distill: float = 0.0  # + weight x hidden-state KD from the baseline in fine-tune
    warmup_from_smaller: bool = True  # N >= 4 starts its warm-up from the N/2 warm-up
    # late multiplexing (mux_layers > 0 or a learned combiner) fine-tunes the baseline for
    # mux_finetune_steps at late_mux_lr (frozen backbone: combiner, index embeddings, demux and
    # heads train); the loss adds late_mux_align x each demuxed state's distance to the baseline's
    late_mux_freeze_backbone: bool = True
    late_mux_align: float = 1.0
    late_mux_lr: float = 1e-3
    # > 0 (backbone frozen): the shared layers after the first k and the pooler train at this
    # rate; the embeddings and per-instance layers stay frozen (their outputs computed once)
    late_mux_shared_lr: float = 0.0
    # Academus students: boosting steps per student, then joint stacking distillation on every
    # prefix sum, student_stacking_focus of its loss on the full sum (0: all prefixes alike)
    student_steps: int = 400
    student_stacking_steps: int = 200
    student_stacking_focus: float = 0.0
    student_lr: float = 2e-4
    # boosting and stacking on "kl" (at temperature 2) or "mse"; layers from the teacher's
    # lowest ("bottom") or spread over its depth; the pooler reads the token "mean" or "cls";
    # student_unlabeled warm-up corpus sentences join the distillation (see docs/students.md)
    student_loss: str = "kl"
    student_init: str = "bottom"
    student_pooling: str = "mean"
    student_unlabeled: int = 0
    prune_stages: int = 2
    importance_examples: int = 256
    freeze_word_embeddings: bool = True
    seed: int = 0
    # task fine-tunes and pruning recovery: "standard" loop or "l2l" (layer-to-layer relay:
    # model in host memory, one stage on the device at a time, batch_size / l2l_micro_batches
    # examples per micro-batch, boundary activations stashed on the "device" or the "host"), or
    # "auto" (standard, trained again with l2l when the device runs out of memory)
    # how the task fine-tunes and pruning recovery draw batches: "grouped" (length-sorted pools,
    # little padding) or "random"; and their forward's precision: "auto", "bf16" or "fp32"
    batching: str = "grouped"
    train_autocast: str = "auto"
    trainer: str = "standard"
    l2l_micro_batches: int = 4
    l2l_stash: str = "device"

    def __post_init__(self) -> None:
        # every field's type and range, from one table, before any data, study or MLflow run
        # exists; numbers are normalised (YAML `lr: 1` -> 1.0) so equal recipes key equally
        for f in fields(self):
            value = getattr(self, f.name)
            ok, normalised = _RECIPE_RULES[f.name].check(value)
            if not ok:
                raise ConfigError(_RECIPE_RULES[f.name].message(f.name, value, f.default))
            if normalised is not value:
                object.__setattr__(self, f.name, normalised)
        # the rules between fields: each training loop draws full batches
        if self.max_train_examples is not None and self.max_train_examples < self.batch_size:
            raise ConfigError(
                f"recipe field max_train_examples ({self.max_train_examples!r}) must be >= "
                f"batch_size ({self.batch_size}) or None (all examples); raise it or lower "
                "batch_size"
            )
        if self.mux_warmup_steps > 0 and self.warmup_corpus_size < self.batch_size:
            raise ConfigError(
                f"recipe field warmup_corpus_size ({self.warmup_corpus_size!r}) must be >= "
                f"batch_size ({self.batch_size}) when mux_warmup_steps > 0 (the warm-up draws "
                "full batches), e.g. 20000; or set mux_warmup_steps to 0"
            )
        try:  # L2L micro-batches must divide the batch (the rule the training loops share)
            validate_trainer(self.trainer, self.l2l_micro_batches, self.l2l_stash, self.batch_size)
        except ConfigError as e:
            raise ConfigError(
                f"recipe fields trainer / l2l_micro_batches / l2l_stash: {e}"
            ) from None
        if self.int8_recovery_steps > 0 and self.trainer != "standard":
            raise ConfigError(
                "recipe field int8_recovery_steps > 0 needs trainer 'standard' (the L2L "
                "executor moves plain layers, not int8-emulating ones); set one of them differently"
            )
        if self.late_mux_shared_lr > 0 and not self.late_mux_freeze_backbone:
            raise ConfigError(
                f"recipe field late_mux_shared_lr ({self.late_mux_shared_lr!r}) > 0 needs "
                "late_mux_freeze_backbone true (unfrozen, every layer trains at late_mux_lr)"
            )
        if self.recovery_layer_distill > 0 and self.trainer != "standard":
            raise ConfigError(
                "recipe field recovery_layer_distill > 0 needs trainer 'standard' (the L2L "
                "executor keeps one layer at a time); set one of them differently"
            )

    @classmethod
    def preset(cls, name: str = "fast", **overrides: Any) -> Recipe:
        """A named recipe (see `RECIPE_PRESETS`) with `overrides` applied on top."""
        if name not in RECIPE_PRESETS:
            raise ConfigError(
                f"recipe preset {name!r} is unknown; use one of {sorted(RECIPE_PRESETS)}"
            )
        return cls(**{**RECIPE_PRESETS[name], **overrides})


# Named training recipes. "fast" is Recipe's defaults (minutes per candidate on a CPU, the
# baseline trained to its plateau on all examples); "accurate": 2.5x the mux fine-tune and 13x
# the pruning recovery.
RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    # the README's main job in minutes on a 2-core CPU; N=1 only (N > 1 needs "fast"'s fine-tune)
    "quick": {
        "finetune_steps": 200,  # short of a plateau: its output says the baseline is not converged
        "eval_every": 50,
        "max_train_examples": 4000,
        "recovery_steps": 100,
        "prune_stages": 1,
        "importance_examples": 128,
    },
    "fast": {},
    "accurate": {
        "mux_finetune_steps": 2500,
        "recovery_steps": 2000,
    },
}


def validate_candidate(sparsity: object, n: object) -> tuple[float, int]:
    try:
        s = float(sparsity)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"sparsity {sparsity!r} is not a number; use a fraction in [0, 1), e.g. 0.7"
        ) from None
    if not math.isfinite(s) or not 0.0 <= s < 1.0:
        raise ConfigError(
            f"sparsity ({sparsity!r}) must be in [0, 1); e.g. --sparsity 0.7 removes 70% of the encoder"
        )
    bad_n = ConfigError(f"mux width N ({n!r}) must be a positive integer (1 = no multiplexing)")
    if isinstance(n, bool):
        raise bad_n
    if not isinstance(n, int):
        try:
            fn = float(n)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise bad_n from None
        if not fn.is_integer():
            raise bad_n
        n = int(fn)
    if n < 1:
        raise bad_n
    if n > MAX_MUX:
        raise ConfigError(
            f"mux width N ({n}) must be at most {MAX_MUX}; DataMUX reports usable accuracy up to N=40"
        )
    return s, n


def validate_mux_layers(layers: object) -> int:
    """mux_layers: an integer in [0, MAX_MUX_LAYERS] (the model's own depth is checked where
    the model is known)."""
    if isinstance(layers, bool) or not isinstance(layers, numbers.Integral):
        try:
            f = float(layers)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            f = math.nan
        if isinstance(layers, bool) or not f.is_integer():
            raise ConfigError(
                f"mux_layers ({layers!r}) must be an integer >= 0: the encoder layers run per "
                "instance before the N instances are combined (0 = mix the embeddings)"
            )
        layers = int(f)
    if not 0 <= int(layers) <= MAX_MUX_LAYERS:
        raise ConfigError(
            f"mux_layers ({layers!r}) must be in [0, {MAX_MUX_LAYERS}] and below the model's "
            "number of layers, e.g. 2"
        )
    return int(layers)


@dataclass(frozen=True)
class MuxShape:
    """How a model multiplexes: N instances per pass, `layers` of its encoder run per instance
    before the `combiner` combines them (0 layers + "binding" is early mixing, DataMUX's)."""

    n: int = 1
    layers: int = 0
    combiner: str = "binding"

    @property
    def late(self) -> bool:
        """Built from the fine-tuned baseline (per-instance layers or a learned combiner) rather
        than from the token-retrieval warm-up."""
        return self.n > 1 and (self.layers > 0 or self.combiner != "binding")

    @property
    def prefix_positions(self) -> int:
        """The N of the index prefix that takes position embeddings (none when the prefix joins
        after per-instance layers): what `BaseModel.check_lengths` adds to a sequence."""
        return self.n if self.layers == 0 else 1

    @property
    def suffix(self) -> str:
        """What `Candidate.describe` adds for a late model ("" for early mixing)."""
        return f" k={self.layers} {self.combiner}" if self.late else ""


# ---- one configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One configuration of the search: a PruMUX model (sparsity, N, mux variant; students and
    student_depth 0) or K Academus students of a depth (sparsity 0, N=1). Validated and
    normalised once here (sparsity rounded to 6 places, so equal configurations are equal and
    hash alike); frozen, so it is a dictionary key. `Candidate()` is the baseline."""

    # the only list of a configuration's fields: the search space's dimensions, the
    # recommender's columns and every stored record derive from it (see `CANDIDATE_FIELDS`).
    # metadata "technique": the one technique the field applies to (the other's
    # configurations hold its default); "mux_shape": how N > 1 instances are combined (an N=1
    # configuration holds its default)
    technique: str = "prumux"
    sparsity: float = field(default=0.0, metadata={"technique": "prumux"})
    mux: int = field(default=1, metadata={"technique": "prumux"})
    mux_variant: str = field(default="gaussian", metadata={"technique": "prumux"})
    students: int = field(default=0, metadata={"technique": "students"})
    student_depth: int = field(default=0, metadata={"technique": "students"})
    precision: str = "fp32"
    # late multiplexing: the first mux_layers encoder layers run per instance before the
    # mux_combiner combines the N instances (see `MuxShape`)
    mux_layers: int = field(default=0, metadata={"technique": "prumux", "mux_shape": True})
    mux_combiner: str = field(
        default="binding", metadata={"technique": "prumux", "mux_shape": True}
    )

    def __post_init__(self) -> None:
        if self.technique not in TECHNIQUES:
            raise ConfigError(f"technique ({self.technique!r}) must be one of {list(TECHNIQUES)}")
        s, n = validate_candidate(self.sparsity, self.mux)
        object.__setattr__(self, "sparsity", round(s, 6))
        object.__setattr__(self, "mux", n)
        if self.mux_variant not in MUX_VARIANTS:
            raise ConfigError(
                f"mux variant ({self.mux_variant!r}) must be one of {list(MUX_VARIANTS)}"
            )
        object.__setattr__(self, "mux_layers", validate_mux_layers(self.mux_layers))
        if self.mux_combiner not in MUX_COMBINERS:
            raise ConfigError(
                f"mux combiner ({self.mux_combiner!r}) must be one of {list(MUX_COMBINERS)}"
            )
        if n == 1 and (self.mux_layers or self.mux_combiner != "binding"):
            raise ConfigError(
                f"mux_layers ({self.mux_layers}) and mux_combiner ({self.mux_combiner!r}) apply "
                "to multiplexed models only; use N > 1, or mux_layers 0 and mux_combiner 'binding'"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision ({self.precision!r}) must be one of {list(PRECISIONS)}")
        for name in ("students", "student_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"{name} ({v!r}) must be an integer")
            object.__setattr__(self, name, int(v))
        if self.technique == "students":
            if not 1 <= self.students <= MAX_STUDENTS:
                raise ConfigError(
                    f"students ({self.students!r}) must be an integer in [1, {MAX_STUDENTS}]"
                )
            if self.student_depth not in STUDENT_DEPTHS:
                raise ConfigError(
                    f"student_depth ({self.student_depth!r}) must be one of {list(STUDENT_DEPTHS)}"
                )
            if self.sparsity != 0.0 or self.mux != 1:
                raise ConfigError(
                    f"a students configuration has sparsity 0 and N=1, got sparsity "
                    f"{self.sparsity:g} and N={self.mux}"
                )
        elif self.students or self.student_depth:
            raise ConfigError(
                f"a PruMUX configuration has no students, got students={self.students} and "
                f"student_depth={self.student_depth}"
            )

    @classmethod
    def from_dict(cls, d: Any) -> Candidate:
        """From a stored record (YAML, JSON, an Optuna attribute); a record written before
        students existed is a PruMUX one."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown configuration key {unknown[0]!r}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_baseline(self) -> bool:
        return (
            self.technique == "prumux"
            and self.sparsity == 0.0
            and self.mux == 1
            and self.precision == "fp32"
        )

    @property
    def mux_shape(self) -> MuxShape:
        return MuxShape(self.mux, self.mux_layers, self.mux_combiner)

    def describe(self) -> str:
        if self.technique == "students":
            text = f"students K={self.students} d={self.student_depth}"
        else:
            text = f"s={self.sparsity:g} N={self.mux}{self.mux_shape.suffix}"
        return text if self.precision == "fp32" else f"{text} {self.precision}"

    # Within one family, a more aggressive configuration (higher sparsity and N; fewer or
    # shallower students) loses at least as much accuracy and runs at least as fast: the
    # guided sampler's dominance, the recommender's suggestions and the meta-model's monotone
    # constraints all rest on this order.
    @property
    def family(self) -> tuple[str, ...]:
        """Configurations comparable by aggressiveness share a family."""
        if self.technique == "students":
            return ("students",)
        return ("prumux", self.mux_variant, self.mux_combiner)

    @property
    def aggressiveness(self) -> tuple[float, ...]:
        """Coordinates that never lower the loss or the speedup as they rise (within a family).
        More per-instance layers multiplex less; N=1 runs every layer per instance, so its
        coordinate is below any multiplexed model's."""
        rank = float(PRECISION_RANK[self.precision])
        if self.technique == "students":
            return (-float(self.students), -float(self.student_depth), rank)
        per_instance = -float(self.mux_layers) if self.mux > 1 else -float(MAX_MUX_LAYERS)
        return (self.sparsity, math.log2(self.mux), per_instance, rank)

    def below(self, other: Candidate) -> bool:
        """Same family and no more aggressive than `other` (so it loses no more than `other`)."""
        return self.family == other.family and all(
            x <= y + 1e-9 for x, y in zip(self.aggressiveness, other.aggressiveness, strict=True)
        )


BASELINE = Candidate()

# ---- Candidate's fields, as the rest of the package lists them ----------------------------------
# in field order (what `Candidate.to_dict` writes: YAML, JSON, MLflow params)
CANDIDATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Candidate))
# each field's default: a configuration's value for a field that does not apply to it
CANDIDATE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Candidate)}
# the fields only one technique uses (field order)
TECHNIQUE_FIELDS: dict[str, tuple[str, ...]] = {
    t: tuple(f.name for f in fields(Candidate) if f.metadata.get("technique") == t)
    for t in TECHNIQUES
}
# how a multiplexed model combines its instances: applies to N > 1 only
MUX_SHAPE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Candidate) if f.metadata.get("mux_shape")
)
# every field in the order a search samples them: the technique first (it decides which others
# apply), then each technique's own fields (`TECHNIQUES` order), then those of every technique;
# the recommender's output columns keep this order too
SAMPLING_ORDER: tuple[str, ...] = (
    "technique",
    *(name for t in TECHNIQUES for name in TECHNIQUE_FIELDS[t]),
    *(f.name for f in fields(Candidate) if f.name != "technique" and "technique" not in f.metadata),
)


def field_technique(name: str) -> str | None:
    """The technique Candidate field `name` belongs to (None: it applies to every one)."""
    return next((t for t, names in TECHNIQUE_FIELDS.items() if name in names), None)


# ---- timing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThroughputConfig:
    """How throughput is timed: a fixed batch of `batch_size` x `seq_len` tokens, `warmup`
    untimed and `repeats` timed passes on `device`, replayed as CUDA graphs if `cuda_graphs`."""

    batch_size: int = 64
    seq_len: int = 128
    warmup: int = 3
    repeats: int = 10
    device: str = "cpu"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.seq_len < 8 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError(
                f"throughput config invalid (batch {self.batch_size}, seq_len {self.seq_len}, "
                f"repeats {self.repeats}, warmup {self.warmup}); use batch >= 1, seq_len >= 8, repeats >= 1"
            )


# ---- the accuracy-loss budget ----------------------------------------------------------------
def check_precision(precision: str, device: str) -> str:
    """`precision` must be one the device offers (`DEVICE_PRECISIONS`)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    offered = DEVICE_PRECISIONS[kind]
    if precision not in offered:
        raise ConfigError(
            f"precision {precision!r} is not offered on {device}; choose one of {list(offered)}"
        )
    return precision


def check_budget(budget: object) -> float:
    """An accuracy-loss budget in points: a finite number in [0, 100] (not a boolean)."""
    not_a_number = ConfigError(
        f"budget {budget!r} is not a number; give the accepted accuracy loss in points, e.g. 2.0"
    )
    if isinstance(budget, bool):
        raise not_a_number
    if not isinstance(budget, (int, float)):
        try:
            budget = float(budget)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise not_a_number from None
    b = float(budget)
    if math.isnan(b) or not 0.0 <= b <= 100.0:
        raise ConfigError(
            f"budget ({budget!r}) must be an accuracy loss in points between 0 and 100, e.g. 2.0"
        )
    return b
