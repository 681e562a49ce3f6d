"""The training recipe of a baseline and its candidates (`Recipe`, part of every cache key), its
named presets (`RECIPE_PRESETS`), and what each field is: its rule (type and range), the part of
the recipe it belongs to (`RECIPE_GROUPS`) and its one line of help. The command line's recipe
flags are generated from these (`cli._flags`), so every field is settable and documented once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from autoprumux._rules import COUNT, FLAG, FRACTION, LR, STEPS, WEIGHT, Rule
from autoprumux.config._candidate import Candidate, MuxShape
from autoprumux.config._names import (
    BATCHINGS,
    LOGIT_LOSSES,
    PATH_SCHEDULES,
    PLAN_COSTS,
    POOLINGS,
    RECOVERY_SCHEDULES,
    RECOVERY_SOURCES,
    STASH_PLACES,
    STUDENT_INITS,
    TRAIN_AUTOCASTS,
    TRAINERS,
    validate_trainer,
)
from autoprumux.config._path import level_of, path_levels
from autoprumux.errors import ConfigError

# the parts of a recipe, in the order the command line's help lists them: what each trains
RECIPE_GROUPS = {
    "data": "the data every stage trains on",
    "finetune": "the baseline's fine-tune, and the stopping rule every stage shares",
    "mux": "multiplexing: the token-retrieval warm-up and the N > 1 task fine-tune",
    "late_mux": "late multiplexing: per-instance layers, then a learned combiner",
    "recovery": "pruning and its recovery (distilled from the baseline)",
    "int8": "int8 candidates: distilled further while computing as int8 will",
    "students": "Academus students: boosting, then stacking",
    "path": "the pruning path: one distilled run from sparsity 0 up, a snapshot per level",
    "snapshot": "a path snapshot's own recovery at its level, on top of the path",
    "loop": "the training loop: batches, precision, and L2L's constant device memory",
}


def _field(default: Any, rule: Rule, group: str, help: str) -> Any:
    """A Recipe field with its rule, its group and its help beside it."""
    assert group in RECIPE_GROUPS, group
    return field(default=default, metadata={"rule": rule, "group": group, "help": help})


@dataclass(frozen=True)
class Recipe:
    """The training recipe of a baseline and its candidates (part of every cache key).

    The baseline's fine-tune trains at most `finetune_steps`, stopped once the validation metric
    has not risen by more than `min_delta` points in `patience` evaluations, one every
    `eval_every` steps, keeping its best evaluation's weights; at the plateau the LR decays
    linearly to 0 over `plateau_anneal` x the steps trained so far, still validated. The
    candidates' stages (each pruning recovery, the mux fine-tunes, each student and the
    stacking) stop by the same rule: their step counts are caps (`training.StoppingRule`)."""

    # ---- data
    max_seq_len: int | None = _field(
        None,
        Rule(int, low=8, none="long enough for 99% of the training examples"),
        "data",
        "max tokens per example (default: 99% of training examples fit)",
    )
    max_train_examples: int | None = _field(
        None,
        Rule(int, low=1, none="all examples"),
        "data",
        "training examples (seeded subsample; default: all)",
    )
    validation_examples: int | None = _field(
        None,
        Rule(int, low=0, none="10% of train, 8+ per class, at most 2,000"),
        "data",
        "whole training texts held out to stop training and to choose (stratified, a seed of "
        "its own; their phrases are not trained on either; default: 10% of train, at most "
        "2,000; 0: none, every stage trains its cap)",
    )
    stopping_examples: int | None = _field(
        None,
        Rule(int, low=0, none="as many as the validation split, when train can spare them"),
        "data",
        "whole training texts held out apart from the validation split, read only to stop "
        "training (each stage's plateau and the evaluation whose weights it keeps), so that the "
        "validation split only chooses: a stage's validation score is then not the best of its "
        "own evaluations (default: as many as the validation split holds, none when train "
        "cannot spare them; 0: the validation split does both)",
    )
    batch_size: int = _field(32, COUNT, "data", "examples per step")
    lr: float = _field(1e-4, LR, "finetune", "learning rate of the baseline's fine-tune")
    # ---- the baseline's fine-tune and the stopping rule
    finetune_steps: int = _field(
        10000, STEPS, "finetune", "most baseline fine-tune steps (it stops on a plateau)"
    )
    eval_every: int = _field(200, COUNT, "finetune", "steps between validation evaluations")
    patience: int = _field(5, COUNT, "finetune", "evaluations without a gain that stop a stage")
    min_delta: float = _field(
        0.0, Rule(float, low=0.0), "finetune", "points a validation gain must exceed to count"
    )
    plateau_anneal: float = _field(
        0.5,
        Rule(float, low=0.0, high=4.0),
        "finetune",
        "at the plateau, decay the LR to 0 over this fraction of the steps so far (0: stop)",
    )
    # ---- multiplexing
    mux_warmup_steps: int = _field(
        400, STEPS, "mux", "token-retrieval warm-up steps per N (0: none)"
    )
    mux_warmup_lr: float = _field(2e-4, LR, "mux", "learning rate of the warm-up")
    warmup_corpus_size: int = _field(
        20000, Rule(int, low=0), "mux", "unlabeled sentences for the warm-up (seeded subsample)"
    )
    mux_finetune_steps: int = _field(1000, STEPS, "mux", "most task fine-tune steps per N > 1")
    # the N > 1 encoder must learn to demultiplex: more, faster steps
    mux_finetune_lr: float = _field(3e-4, LR, "mux", "learning rate of the N > 1 fine-tune")
    retrieval_weight: float = _field(
        0.1, FRACTION, "mux", "weight of token retrieval kept in the N > 1 fine-tune (DataMUX)"
    )
    distill_weight: float = _field(
        0.5,
        FRACTION,
        "mux",
        "weight of distillation from the baseline in the N > 1 fine-tune and pruning recovery",
    )
    # ---- pruning recovery
    recovery: str = _field(
        "separate",
        Rule(str, choices=RECOVERY_SOURCES),
        "recovery",
        "a pruned N=1 model: its own prune-and-recover ('separate') or the pruning path's "
        "snapshot at its sparsity ('path': one run serves every level)",
    )
    recovery_steps: int = _field(
        150, STEPS, "recovery", "most recovery steps after pruning, all stages"
    )
    recovery_layer_distill: float = _field(
        0.0, WEIGHT, "recovery", "weight of layer-wise distillation in the recovery (N=1; CoFi)"
    )
    int8_recovery_steps: int = _field(
        0,
        STEPS,
        "int8",
        "distillation steps of an int8 candidate trained as conversion computes (0: converted "
        "as trained)",
    )
    recovery_unlabeled: int = _field(
        0,
        Rule(int, low=0),
        "recovery",
        "unlabeled warm-up-corpus sentences distilled in the recovery (no task loss)",
    )
    recovery_schedule: str = _field(
        "even",
        Rule(str, choices=RECOVERY_SCHEDULES),
        "recovery",
        "recovery steps per pruning stage: 'even', or 'rising' with the stage number",
    )
    plan_cost: str = _field(
        "params",
        Rule(str, choices=PLAN_COSTS),
        "recovery",
        "pruning removes what loses least per 'params' saved or per inference 'time' saved",
    )
    # ---- multiplexing, continued
    mux_pooling: str = _field(
        "mean",
        Rule(str, choices=POOLINGS),
        "mux",
        "N > 1 head reads the demuxed [CLS] ('cls') or token mean ('mean')",
    )
    warmup_hidden_distill: float = _field(
        1.0, WEIGHT, "mux", "weight of hidden-state distillation from the N=1 base in the warm-up"
    )
    mux_hidden_distill: float = _field(
        0.0, WEIGHT, "mux", "weight of hidden-state distillation in the N > 1 fine-tune"
    )
    warmup_from_smaller: bool = _field(
        True, FLAG, "mux", "N >= 4 starts its warm-up from the N/2 warm-up (true/false)"
    )
    # ---- late multiplexing: fine-tunes the baseline for mux_finetune_steps at late_mux_lr
    late_mux_freeze_backbone: bool = _field(
        True,
        FLAG,
        "late_mux",
        "train only the combiner, index embeddings, demux and heads (true/false)",
    )
    late_mux_align: float = _field(
        1.0, WEIGHT, "late_mux", "weight of each demuxed state's distance to the baseline's"
    )
    late_mux_lr: float = _field(1e-3, LR, "late_mux", "learning rate of the late fine-tune")
    late_mux_shared_lr: float = _field(
        0.0,
        Rule(float, low=0.0),
        "late_mux",
        "frozen backbone: the shared layers and pooler train at this rate (0: frozen)",
    )
    # ---- Academus students
    student_steps: int = _field(400, STEPS, "students", "most boosting steps per student")
    student_stacking_steps: int = _field(
        200, STEPS, "students", "most joint stacking-distillation steps of all students"
    )
    student_stacking_focus: float = _field(
        0.0, FRACTION, "students", "share of the stacking loss on the full sum (0: all prefixes)"
    )
    student_lr: float = _field(2e-4, LR, "students", "learning rate of the students")
    student_loss: str = _field(
        "kl",
        Rule(str, choices=LOGIT_LOSSES),
        "students",
        "boosting and stacking on 'kl' (temperature 2) or 'mse'",
    )
    student_init: str = _field(
        "bottom",
        Rule(str, choices=STUDENT_INITS),
        "students",
        "students' layers from the teacher's lowest ('bottom') or spread over its depth",
    )
    student_pooling: str = _field(
        "mean",
        Rule(str, choices=POOLINGS),
        "students",
        "students' pooler reads [CLS] ('cls') or the token mean ('mean')",
    )
    student_unlabeled: int = _field(
        0,
        Rule(int, low=0),
        "students",
        "warm-up-corpus sentences added to the students' distillation",
    )
    student_start: float = _field(
        0.0,
        Rule(float, low=0.0, high=0.95),
        "students",
        "the pruning path's level whose smaller layers the students start from (0: the "
        "baseline's own layers); still distilled from the baseline",
    )
    # ---- pruning, continued
    prune_stages: int = _field(2, COUNT, "recovery", "pruning stages")
    importance_examples: int = _field(
        256, COUNT, "recovery", "examples that score the heads' and neurons' importance"
    )
    freeze_word_embeddings: bool = _field(
        True, FLAG, "finetune", "keep the word embeddings frozen in every stage (true/false)"
    )
    seed: int = _field(
        0,
        Rule(int, low=0, high=2**32 - 1),  # numpy-compatible seed range
        "data",
        "seed of sampling, initialisation and data order",
    )
    # ---- the pruning path (`training.prune_path`)
    path_max_sparsity: float = _field(
        0.9, Rule(float, low=0.05, high=0.95), "path", "the sparsity the pruning path ends at"
    )
    path_step: float = _field(
        0.05,
        Rule(float, low=0.0, above=True, high=0.5),
        "path",
        "sparsity between the path's levels (a snapshot at each)",
    )
    path_schedule: str = _field(
        "cubic",
        Rule(str, choices=PATH_SCHEDULES),
        "path",
        "how the path's sparsity rises over its steps: 'cubic' (fast first) or 'linear'",
    )
    path_steps: int = _field(
        2000, STEPS, "path", "training steps over which the path's sparsity rises, all levels"
    )
    path_settle_steps: int = _field(
        50, STEPS, "path", "steps each path level trains besides its share, before its snapshot"
    )
    path_distill_weight: float = _field(
        0.5, FRACTION, "path", "weight of distillation from the baseline along the path"
    )
    path_lr: float = _field(1e-4, LR, "path", "peak learning rate of each level of the path")
    path_importance_examples: int = _field(
        256, COUNT, "path", "examples that score the heads' and neurons' importance per level"
    )
    path_plan_cost: str = _field(
        "time",
        Rule(str, choices=PLAN_COSTS),
        "path",
        "each path level removes what loses least per 'params' saved or per inference 'time' saved",
    )
    path_sublayers_per_level: int | None = _field(
        None,
        Rule(int, low=1, high=64, none="no limit"),
        "path",
        "most whole sub-layers (attention or FFN blocks, a layer's last head included) one path "
        "level removes; a level that needs more takes heads and FFN units instead",
    )
    path_seed: int | None = _field(
        None,
        Rule(int, low=0, high=2**32 - 1, none="the recipe's seed"),
        "path",
        "seed of the path's data order and importance samples alone: another draw of the path "
        "over the same baseline (default: the recipe's seed)",
    )
    snapshot_recovery_steps: int = _field(
        0,
        STEPS,
        "snapshot",
        "most steps a served path snapshot trains further at its level (distilled from the "
        "baseline like a recovery, stopped on the validation plateau; 0: the snapshot as cut)",
    )
    # ---- the training loop
    batching: str = _field(
        "grouped",
        Rule(str, choices=BATCHINGS),
        "loop",
        "batches from length-sorted pools ('grouped', little padding) or 'random'",
    )
    train_autocast: str = _field(
        "auto",
        Rule(str, choices=TRAIN_AUTOCASTS),
        "loop",
        "the training forward's precision: 'auto' (bf16 where native), 'bf16' or 'fp32'",
    )
    trainer: str = _field(
        "standard",
        Rule(str, choices=TRAINERS),
        "loop",
        "fine-tune loop: 'standard', 'l2l' (layer-to-layer, constant memory) or 'auto' "
        "(standard, retried with l2l when the device runs out of memory)",
    )
    l2l_micro_batches: int = _field(
        4, COUNT, "loop", "L2L micro-batches per batch (must divide --batch-size)"
    )
    l2l_stash: str = _field(
        "device",
        Rule(str, choices=STASH_PLACES),
        "loop",
        "L2L boundary activations kept on the 'device' or the 'host'",
    )

    def __post_init__(self) -> None:
        # every field's type and range, from its rule, before any data, study or MLflow run
        # exists; numbers are normalised (YAML `lr: 1` -> 1.0) so equal recipes key equally
        for f in fields(self):
            value = getattr(self, f.name)
            rule: Rule = f.metadata["rule"]
            ok, normalised = rule.check(value)
            if not ok:
                raise ConfigError(rule.message(f.name, value, f.default))
            if normalised is not value:
                object.__setattr__(self, f.name, normalised)
        # the rules between fields: each training loop draws full batches
        if self.max_train_examples is not None and self.max_train_examples < self.batch_size:
            raise ConfigError(
                f"recipe field max_train_examples ({self.max_train_examples!r}) must be >= "
                f"batch_size ({self.batch_size}) or None (all examples); raise it or lower "
                "batch_size"
            )
        if self.validation_examples == 0 and self.stopping_examples:
            raise ConfigError(
                f"recipe field stopping_examples ({self.stopping_examples!r}) needs a validation "
                "split to stand apart from (validation_examples is 0); set stopping_examples 0 "
                "or validation_examples None or > 0"
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

        if self.student_start > 0 and level_of(self.path_grid, self.student_start) is None:
            raise ConfigError(
                f"recipe field student_start ({self.student_start!r}) must be 0 or a level of "
                f"the pruning path: one of {self.path_grid} (path_step {self.path_step}, "
                f"path_max_sparsity {self.path_max_sparsity})"
            )

    @property
    def path_draw(self) -> int:
        """The seed the pruning path draws its data order and importance samples with."""
        return self.seed if self.path_seed is None else self.path_seed

    @property
    def path_grid(self) -> list[float]:
        """The pruning path's levels (`path_levels` of path_max_sparsity and path_step)."""
        return path_levels(self.path_max_sparsity, self.path_step)

    def serves_from_path(self, sparsity: float, shape: MuxShape) -> bool:
        """Whether a pruned model is the pruning path's snapshot at its level (`recovery` is
        "path" and the model is N=1) rather than its own prune-and-recover."""
        return self.recovery == "path" and sparsity > 0 and shape == MuxShape()

    def trains_own_model(self, config: Candidate) -> bool:
        """Whether evaluating `config` under this recipe trains a model of its own: a
        prune-and-recover, an N-way fine-tune, students, or an int8-aware recovery. Otherwise
        it converts a model that a search builds once and shares (the baseline, or the pruning
        path's snapshot at its level) and costs a conversion, a scoring and a timing: a cheap
        evaluation, where a trained one costs minutes to hours on a CPU."""
        if config.students or config.mux > 1:
            return True
        if config.precision == "int8" and self.int8_recovery_steps > 0:
            return True
        if config.sparsity == 0:
            return False
        return not self.serves_from_path(config.sparsity, MuxShape()) or bool(
            self.snapshot_recovery_steps
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
        # pruned N=1 models from one short path to s=0.6 (a trial then trains nothing)
        "recovery": "path",
        "path_max_sparsity": 0.6,
        "path_step": 0.1,
        "path_steps": 300,
        "path_settle_steps": 20,
        "path_importance_examples": 128,
    },
    "fast": {},
    "accurate": {
        "mux_finetune_steps": 2500,
        "recovery_steps": 2000,
    },
}
