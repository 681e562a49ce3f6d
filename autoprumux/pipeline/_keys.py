"""Every cache key of a pipeline, in one place: what identifies each entry (the baseline, the
teacher tables, warm-ups, mux models, pruned candidates, int8-trained models, students, the
pruning path's levels) is the model, the task's data and the fields of each part of the recipe
its stage reads (`config.RECIPE_GROUPS`), plus `KEY_VERSION`."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from autoprumux._cache import key_hash
from autoprumux.config import MuxShape, Recipe
from autoprumux.data import VALIDATION_SEED
from autoprumux.models import IMPORTANCE_SCORING, LAYER_TIME, StudentConfig
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._corpus import corpus_items, unlabeled_items

# what a key holds: raised when that changes, so every entry built before is rebuilt, never
# mistaken for one built now (2: keys from the recipe's parts, every field of a part)
KEY_VERSION = 2
# the parts of the recipe every stage reads: its data, the baseline's fine-tune with the
# stopping rule all stages share, and the training loop
SHARED_PARTS = ("data", "finetune", "loop")


def recipe_part(recipe: Recipe, *groups: str) -> dict[str, Any]:
    """The recipe's fields of `groups` (their `group` metadata), by name."""
    return {
        f.name: getattr(recipe, f.name) for f in fields(recipe) if f.metadata["group"] in groups
    }


def cache_key(pipe: StageContext, **extra: object) -> dict:
    """The key every stage starts from: the key version, model, task, data, the validation split
    (its size and seed), the recipe's shared parts (its autocast as resolved on this device)
    and, for a given classifier, how its head was ordered."""
    return {
        "key_version": KEY_VERSION,
        "model": pipe.base.model_id,
        "task": pipe.task.name,
        "data": pipe.data.fingerprint(),
        "validation": [len(pipe.validation_items), len(pipe.train_items), VALIDATION_SEED],
        **recipe_part(pipe.recipe, *SHARED_PARTS),
        "train_autocast": pipe.train_autocast,
        # a given classifier is not trained here: its baseline and all built from it differ
        "baseline": "trained" if pipe.head_rows is None else "given",
        "head_rows": None if pipe.head_rows is None else list(pipe.head_rows),
        **extra,
    }


def stopping_key(pipe: StageContext) -> dict:
    """Whether a candidate stage (pruning recovery, a mux fine-tune, students) stops on the
    validation split's plateau and keeps its best weights (`StoppingRule`), or, without a split,
    trains its cap."""
    return {"stages_stop": "validation_plateau" if pipe.stopping_items else "cap"}


def mux_key(pipe: StageContext, shape: MuxShape) -> dict:
    """The key of an unpruned multiplexed model of `shape` (and the start of a pruned
    candidate's): the recipe's mux part and, for late multiplexing, its late part."""
    r = pipe.recipe
    return cache_key(
        pipe,
        **recipe_part(r, "mux", *(["late_mux"] if shape.late else [])),
        n=shape.n,
        mux_layers=shape.layers,
        combiner=shape.combiner,
        variant=pipe.mux_variant,
        **stopping_key(pipe),
    )


def candidate_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> dict:
    """The key of a pruned candidate: its unpruned model's and its recovery's (unpruned: the
    model's own)."""
    if sparsity == 0.0:
        return mux_key(pipe, shape)
    return {**mux_key(pipe, shape), "sparsity": sparsity, **recovery_key(pipe)}


def pruned_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> tuple[str, dict]:
    """(cache kind, key) of the model a pruned configuration is read from: the path's level
    (`Recipe.serves_from_path`), that level recovered further (`snapshot_key`), or the
    candidate's own entry."""
    r = pipe.recipe
    if r.serves_from_path(sparsity, shape):
        if r.snapshot_recovery_steps:
            return "snapshot", snapshot_key(pipe, sparsity)
        return "path", path_key(pipe, sparsity)
    return "candidate", candidate_key(pipe, sparsity, shape)


def snapshot_key(pipe: StageContext, level: float) -> dict:
    """The key of a path snapshot recovered further at its level: the level's key, the recipe's
    snapshot part, the recovery's distillation weight and the stopping rule."""
    r = pipe.recipe
    return {
        **path_key(pipe, level),
        **recipe_part(r, "snapshot"),
        "distill_weight": r.distill_weight,
        **stopping_key(pipe),
    }


def recovery_key(pipe: StageContext) -> dict:
    """What a pruned candidate's recovery reads: the recipe's recovery part, the unlabeled
    sentences it adds (their count and content hash), how importance is scored and what a
    plan by time counts (`LAYER_TIME`)."""
    return {
        **recipe_part(pipe.recipe, "recovery"),
        **unlabeled_items(pipe)[1],
        "importance": IMPORTANCE_SCORING,
        "layer_time": asdict(LAYER_TIME),
    }


def int8_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> dict:
    """The key of a candidate distilled further while computing as int8 will: the key of the
    model it starts from (`pruned_key`), the recipe's int8 part, and how the conversion rounds."""
    return {
        **pruned_key(pipe, sparsity, shape)[1],
        **recipe_part(pipe.recipe, "int8"),
        "int8_weights": "per_channel",
        "int8_inputs": "static",
    }


def warmup_key(pipe: StageContext, n: int) -> dict:
    """The key of the token-retrieval warm-up for width N: shared by every task (no task or
    data in it), so it holds the model, the warm-up fields and the corpus's content hash."""
    r = pipe.recipe
    pipe.warmup_sentences()  # sets the corpus digest
    start = key_hash(warmup_key(pipe, n // 2)) if r.warmup_from_smaller and n >= 4 else None
    return {
        "key_version": KEY_VERSION,
        "model": pipe.base.model_id,
        "n": n,
        "variant": pipe.mux_variant,
        "steps": r.mux_warmup_steps,
        "lr": r.mux_warmup_lr,
        "hidden_distill": r.warmup_hidden_distill,
        "start_from": start,
        "batch_size": r.batch_size,
        "max_seq_len": r.max_seq_len,
        "freeze_word_embeddings": r.freeze_word_embeddings,
        "seed": r.seed,
        "corpus": pipe.corpus_digest,
    }


def early_mux_key(pipe: StageContext, shape: MuxShape) -> dict:
    """The key of an early-mixing model fine-tuned on the task: its shape's and its warm-up's."""
    warm = key_hash(warmup_key(pipe, shape.n)) if pipe.recipe.mux_warmup_steps else None
    return {**mux_key(pipe, shape), "warmup": warm}


def pruned_late_key(pipe: StageContext, sparsity: float, shape: MuxShape) -> dict:
    """Everything the late model's training reads (its shape and recipe fields) and the key of
    the pruned N=1 model it is built on (`pruned_key`: its candidate or the path's level)."""
    return {
        **mux_key(pipe, shape),
        "on_pruned": pruned_key(pipe, sparsity, MuxShape())[1],
    }


def students_key(pipe: StageContext, k: int, depth: int, extra_key: dict | None = None) -> dict:
    """What K students of `depth` layers are built from: the recipe's students part, the
    corpus sentences they add (`extra_key`, their count and hash; None: read here), and the
    stopping rule."""
    r = pipe.recipe
    cfg = StudentConfig(k=k, depth=depth, pooling=r.student_pooling)
    if extra_key is None:
        extra_key = corpus_items(pipe, r.student_unlabeled)[1] if r.student_unlabeled else {}
    return cache_key(
        pipe,
        technique="students",
        k=cfg.k,
        depth=cfg.depth,
        **recipe_part(r, "students"),
        # the corpus sentences' content hash: another corpus distils other students
        **{f"student_{name}": v for name, v in extra_key.items() if name != "unlabeled"},
        **stopping_key(pipe),
        # students started from a path snapshot: the level's own key (the path it was cut from)
        **({"start": path_key(pipe, r.student_start)} if r.student_start else {}),
    )


def teacher_key(pipe: StageContext, of: str, extra: dict) -> dict:
    """The key of a table of the baseline's outputs (`of`: "logits" or "layers") over the
    training items plus the unlabeled ones `extra` keys."""
    return {**cache_key(pipe), "of": of, **extra}


def path_key(pipe: StageContext, level: float) -> dict:
    """The key of one level of the pruning path (N=1, distilled from the baseline over the
    training items): the baseline's key, the recipe's path part (its schedule, grid and steps:
    every level's model depends on them all; `path_seed` as the seed it draws with, so naming
    the recipe's own seed reads the default path), how importance is scored, what a plan by
    time counts (`LAYER_TIME`) and the level."""
    return cache_key(
        pipe,
        technique="path",
        **{**recipe_part(pipe.recipe, "path"), "path_seed": pipe.recipe.path_draw},
        importance=IMPORTANCE_SCORING,
        layer_time=asdict(LAYER_TIME),
        level=level,
    )
