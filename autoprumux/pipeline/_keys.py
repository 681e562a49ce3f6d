"""What identifies each cache entry of a pipeline: the model, the task's data and the recipe
fields a stage reads. A field is keyed only where it changes what is built, so entries built
before it existed keep their keys."""

from __future__ import annotations

from autoprumux.config import MuxShape
from autoprumux.data import VALIDATION_SEED
from autoprumux.pipeline._context import StageContext


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
