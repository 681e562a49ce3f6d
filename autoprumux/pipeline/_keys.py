"""Every cache key of a pipeline, in one place: what identifies each entry (the baseline, the
teacher tables, warm-ups, mux models, pruned candidates, students) is the model, the task's data
and the recipe fields its stage reads. A field is keyed only where it changes what is built, so entries built
before it existed keep their keys."""

from __future__ import annotations

from autoprumux._cache import key_hash
from autoprumux.config import MuxShape
from autoprumux.data import VALIDATION_SEED
from autoprumux.models import StudentConfig
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._corpus import corpus_items, unlabeled_items

# what the students cached before these levers existed were built with: a key without the
# field means this value (so this table stays fixed even if the recipe's defaults change)
STUDENT_LEVER_DEFAULTS = {
    "student_loss": "mse",
    "student_init": "bottom",
    "student_pooling": "cls",
    "student_unlabeled": 0,
    "student_stacking_focus": 0.0,
}


def cache_key(pipe: StageContext, **extra: object) -> dict:
    """The key every stage starts from: model, task, data, the resolved recipe's shared fields
    and, for a given classifier, that it is given and how its head was ordered."""
    r = pipe.recipe
    return {
        "model": pipe.base.model_id,
        "task": pipe.task.name,
        "data": pipe.data.fingerprint(),
        "max_seq_len": r.max_seq_len,
        "batch_size": r.batch_size,
        "lr": r.lr,
        "finetune_steps": r.finetune_steps,
        # the validation split (never trained on) and the baseline's stopping rule
        "validation": [len(pipe.validation_items), VALIDATION_SEED],
        "eval_every": r.eval_every,
        "patience": r.patience,
        "min_delta": r.min_delta,
        # keyed only when the LR anneals at the plateau, so entries stopped there keep their keys
        **({"plateau_anneal": r.plateau_anneal} if r.plateau_anneal else {}),
        "freeze_word_embeddings": r.freeze_word_embeddings,
        "seed": r.seed,
        # how the loops draw batches and the precision they ran in here (keyed only when not
        # the loops' former random fp32, so entries built before they existed keep their keys)
        **(
            {"batching": r.batching, "train_autocast": pipe.train_autocast}
            if (r.batching, pipe.train_autocast) != ("random", "fp32")
            else {}
        ),
        # L2L equals gradient accumulation over its micro-batches (own dropout streams):
        # keyed only when used, so the standard loop's cache entries keep their keys
        **(
            {"trainer": r.trainer, "l2l_micro_batches": r.l2l_micro_batches}
            if r.trainer != "standard"
            else {}
        ),
        # a given classifier is not trained here: its baseline and all built from it differ
        # from a trained baseline's (keyed only when given, so trained entries keep their keys)
        **(
            {"baseline": "given", "head_rows": list(pipe.head_rows)}
            if pipe.head_rows is not None
            else {}
        ),
        **extra,
    }


def stopping_key(pipe: StageContext) -> dict:
    """The part of a candidate stage's key (pruning recovery, a mux fine-tune, students) that says
    it stops on the validation split's plateau and keeps its best weights (`StoppingRule`; the
    rule's fields and the split are in every key, `cache_key`), so entries trained a fixed number
    of steps are not taken for it. None without a split: the stages train their caps as before."""
    return {"stages_stop": "validation_plateau"} if pipe.validation_items else {}


def mux_key(pipe: StageContext, shape: MuxShape) -> dict:
    """The key of an unpruned multiplexed model of `shape` (and the start of a pruned
    candidate's)."""
    r = pipe.recipe
    late = (
        {
            "mux_layers": shape.layers,
            "combiner": shape.combiner,
            "freeze_backbone": r.late_mux_freeze_backbone,
            "align": r.late_mux_align,
            "late_lr": r.late_mux_lr,
            # keyed only when used, so frozen-backbone entries keep their keys
            **({"shared_lr": r.late_mux_shared_lr} if r.late_mux_shared_lr else {}),
        }
        if shape.late
        else {}  # keyed only when used, so early-mixing entries keep their keys
    )
    return cache_key(
        pipe,
        **late,
        n=shape.n,
        variant=pipe.mux_variant,
        mux_warmup_steps=r.mux_warmup_steps,
        mux_warmup_lr=r.mux_warmup_lr,
        mux_finetune_steps=r.mux_finetune_steps,
        mux_finetune_lr=r.mux_finetune_lr,
        retrieval_weight=r.retrieval_weight,
        distill_weight=r.distill_weight,
        mux_pooling=r.mux_pooling,
        mux_hidden_distill=r.mux_hidden_distill,
        # the mux fine-tune and, through `_candidate_key`, the pruning recovery built on it
        **stopping_key(pipe),
    )


def candidate_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> dict:
    """The key of a pruned candidate: its unpruned model's and its recovery's (unpruned: the
    model's own)."""
    if sparsity == 0.0:
        return mux_key(pipe, shape)
    return {**mux_key(pipe, shape), "sparsity": sparsity, **recovery_key(pipe)}


def recovery_key(pipe: StageContext) -> dict:
    """What a pruned candidate's recovery reads from the recipe (its part of the cache key)."""
    r = pipe.recipe
    return {
        "recovery_steps": r.recovery_steps,
        "prune_stages": r.prune_stages,
        "importance_examples": r.importance_examples,
        # keyed only when used, so earlier entries keep their keys
        **({"layer_distill": r.recovery_layer_distill} if r.recovery_layer_distill else {}),
        **({"recovery_schedule": r.recovery_schedule} if r.recovery_schedule != "even" else {}),
        **unlabeled_items(pipe)[1],
    }


def warmup_key(pipe: StageContext, n: int) -> dict:
    r = pipe.recipe
    pipe.warmup_sentences()  # sets the corpus digest
    extra: dict = {}
    if r.warmup_hidden_distill:
        extra["hidden_distill"] = r.warmup_hidden_distill
    if r.warmup_from_smaller and n >= 4:
        extra["start_from"] = key_hash(warmup_key(pipe, n // 2))
    return {
        **extra,
        "model": pipe.base.model_id,
        "n": n,
        "variant": pipe.mux_variant,
        "steps": r.mux_warmup_steps,
        "lr": r.mux_warmup_lr,
        "batch_size": r.batch_size,
        "max_seq_len": r.max_seq_len,
        "freeze_word_embeddings": r.freeze_word_embeddings,
        "seed": r.seed,
        "corpus": pipe.corpus_digest,
    }


def early_mux_key(pipe: StageContext, shape: MuxShape) -> dict:
    """The key of an early-mixing model fine-tuned on the task: its shape's and its warm-up's."""
    warm = key_hash(warmup_key(pipe, shape.n)) if pipe.recipe.mux_warmup_steps else None
    return {**pipe.mux_entry_key(shape), "warmup": warm}


def pruned_late_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> dict:
    """Everything the late model's training reads (its shape and recipe fields) and the key of
    the pruned N=1 candidate it is built on."""
    return {
        **pipe.mux_entry_key(shape),
        "on_pruned": pipe.candidate_entry_key(sparsity, MuxShape()),
    }


def students_key(pipe: StageContext, k: int, depth: int, extra_key: dict | None = None) -> dict:
    """What K students of `depth` layers are built from: the recipe's student fields, the
    corpus sentences they add (`extra_key`, their count and hash; None: read here), and the
    stopping rule."""
    r = pipe.recipe
    cfg = StudentConfig(k=k, depth=depth, pooling=r.student_pooling)
    if extra_key is None:
        extra_key = corpus_items(pipe, r.student_unlabeled)[1] if r.student_unlabeled else {}
    return pipe.entry_key(
        technique="students",
        k=cfg.k,
        depth=cfg.depth,
        student_steps=r.student_steps,
        student_stacking_steps=r.student_stacking_steps,
        student_lr=r.student_lr,
        # keyed only when changed, so the students built before these levers existed stay valid
        **{
            f: getattr(r, f)
            for f, default in STUDENT_LEVER_DEFAULTS.items()
            if getattr(r, f) != default
        },
        # the corpus sentences' content hash: another corpus distils other students
        **{f"student_{name}": v for name, v in extra_key.items() if name != "unlabeled"},
        **stopping_key(pipe),
    )


def teacher_key(pipe: StageContext, of: str, extra: dict) -> dict:
    """The key of a table of the baseline's outputs (`of`: "logits" or "layers") over the
    training items plus the unlabeled ones `extra` keys."""
    return {**pipe.entry_key(), "of": of, **extra}
