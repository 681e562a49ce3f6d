"""A pipeline's multiplexed models before pruning: the token-retrieval warm-up of early
mixing (task-independent, cached per N), the early-mixing task fine-tune on it, and late
multiplexing built on the fine-tuned baseline (see `Recipe.late_mux_*`). Both task fine-tunes
stop on the validation split's plateau, at most `mux_finetune_steps`, and keep their best weights
(`_baseline.stage_rule`); the entry's meta records how (`stopping`)."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path

import torch

from autoprumux._cache import ArtifactCache
from autoprumux.config import Candidate, MuxShape, Recipe
from autoprumux.errors import ConfigError
from autoprumux.models import MuxConfig, MuxSequenceClassifier, warm_start_from
from autoprumux.pipeline._baseline import stage_rule
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._keys import (
    early_mux_key,
    mux_key,
    pruned_late_key,
    warmup_key,
)
from autoprumux.training import (
    TrainConfig,
    retrieval_warmup,
    shared_layer_names,
    train_late_frozen,
)

log = logging.getLogger("autoprumux")
WARMUP_LOG = ("seconds", "retrieval_accuracy")  # what a warm-up's log line reports


def pruned_before_mux(recipe: Recipe, sparsity: float, shape: MuxShape) -> bool:
    """A pruned frozen-backbone late model: its N = 1 candidate is pruned and recovered first,
    then multiplexed on top (`pruned_late_mux_model`), so it reports one step, not one per
    pruning stage."""
    return sparsity > 0 and shape.layers > 0 and recipe.late_mux_freeze_backbone


def last_stage(recipe: Recipe, config: Candidate) -> int:
    """The last step `StageContext.candidate` reports to `on_stage` for a PruMUX `config`: 0
    unpruned (the N-way model, N > 1), 1 for a pruned frozen-backbone late model or a snapshot
    of the pruning path, else the recipe's last pruning stage. A search must never stop a trial there: the candidate is
    finished and is measured."""
    if config.sparsity == 0.0:
        return 0
    if pruned_before_mux(recipe, config.sparsity, config.mux_shape) or recipe.serves_from_path(
        config.sparsity, config.mux_shape
    ):
        return 1
    return recipe.prune_stages


def mux_warmup(pipe: StageContext, n: int) -> tuple[Path, dict]:
    """The token-retrieval warm-up for width N: task-independent, cached per
    (base model, N, mux variant, recipe, corpus) and reused by every task and sparsity.
    Returns (cache entry, its metadata incl. cost in seconds and final retrieval accuracy)."""
    if n < 2:
        raise ConfigError(f"the warm-up is for N >= 2, got N={n}")
    r = pipe.recipe
    sentences = pipe.warmup_sentences()
    key = warmup_key(pipe, n)

    def build(tmp: Path) -> dict:
        m = pipe.fresh_model(n)
        started = None
        if r.warmup_from_smaller and n >= 4:
            smaller, _ = mux_warmup(pipe, n // 2)
            warm_start_from(m, MuxSequenceClassifier.load(smaller / "model"))
            started = n // 2
        teacher = pipe.fresh_model(1) if r.warmup_hidden_distill else None
        stats = retrieval_warmup(
            m,
            sentences,
            TrainConfig(
                steps=r.mux_warmup_steps,
                batch_size=r.batch_size,
                lr=r.mux_warmup_lr,
                seed=r.seed,
            ),
            special_ids=pipe.special_ids,
            desc=f"mux warm-up N={n}",
            device=pipe.device,
            teacher=teacher,
            hidden_distill_weight=r.warmup_hidden_distill,
        )
        m.save(tmp / "model")
        return {"warmup": stats, "corpus_sentences": len(sentences), "started_from_n": started}

    entry, hit = pipe.cache.get_or_build("warmup", key, build)
    meta = ArtifactCache.meta(entry)
    how, secs, acc = "cache hit" if hit else "trained", *(meta["warmup"][k] for k in WARMUP_LOG)
    log.info("warm-up N=%d %s (%s): %.0fs, retrieval accuracy %.3f", n, how, entry, secs, acc)
    return entry, {**meta, "key": key, "cache_hit": hit}


def start_model(pipe: StageContext, n: int) -> tuple[MuxSequenceClassifier, dict]:
    """An N-way model to fine-tune: warmed up (cached) when the recipe asks for it."""
    r = pipe.recipe
    if not r.mux_warmup_steps:
        return pipe.fresh_model(n), {}
    entry, meta = mux_warmup(pipe, n)
    m = pipe.load_model(entry, r.freeze_word_embeddings)
    m.mux_config = replace(m.mux_config, pooling=r.mux_pooling)
    if m.num_labels != pipe.task.num_labels:  # the warm-up never trains the task head
        m.num_labels = pipe.task.num_labels
        m.classifier = torch.nn.Linear(m.classifier.in_features, pipe.task.num_labels)
    return m, meta


def early_mux_model(pipe: StageContext, shape: MuxShape) -> Path:
    """The cache entry of an early-mixing N-way model (from its warm-up) fine-tuned on the task
    with KD from the baseline, until the validation split plateaus (built or cached)."""
    r, n = pipe.recipe, shape.n
    teacher = pipe.baseline()

    def build(tmp: Path) -> dict:
        m, warm = start_model(pipe, n)
        cfg = TrainConfig.from_recipe(
            r,
            r.mux_finetune_steps,
            retrieval_weight=r.retrieval_weight,
            distill_weight=r.distill_weight,
            hidden_distill_weight=r.mux_hidden_distill,
            lr=r.mux_finetune_lr,
        )
        stats = stage_rule(pipe).train(
            m,
            pipe.train_items,
            cfg,
            what=f"mux fine-tune N={n}",
            cap_field="mux_finetune_steps",
            teacher=teacher,
            special_ids=pipe.special_ids,
            desc=f"mux fine-tune N={n}",
            device=pipe.device,
            teacher_logits=pipe.teacher_logits(),
        )
        m.save(tmp / "model")
        stopping = stats.pop("stopping")
        return {
            "warmup": warm.get("warmup"),
            "warmup_cache_hit": warm.get("cache_hit"),
            "train": stats,
            "stopping": stopping,
        }

    entry, hit = pipe.cache.get_or_build("mux", early_mux_key(pipe, shape), build)
    log.info("mux N=%d %s (%s)", n, "cache hit" if hit else "trained", entry)
    return entry


def from_baseline(
    pipe: StageContext, shape: MuxShape, base: MuxSequenceClassifier | None = None
) -> MuxSequenceClassifier:
    """A late-multiplexed model on the fine-tuned baseline (or on `base`, an N=1 model such as
    a pruned candidate): its encoder, pooler and task head, with fresh index embeddings,
    combiner and demultiplexer; the encoder frozen when the recipe says so."""
    base = base if base is not None else pipe.baseline()
    torch.manual_seed(pipe.recipe.seed)
    mux = MuxConfig(
        n=shape.n,
        variant=pipe.mux_variant,
        seed=pipe.recipe.seed,
        pooling=pipe.recipe.mux_pooling,
        layers=shape.layers,
        combiner=shape.combiner,
    )
    m = MuxSequenceClassifier(copy.deepcopy(base.encoder), num_labels=pipe.task.num_labels, mux=mux)
    m.classifier.load_state_dict(base.classifier.state_dict())
    m.original_prunable_params = base.original_prunable_params  # sparsity of a pruned base
    r = pipe.recipe
    shared = set(shared_layer_names(m)) if r.late_mux_shared_lr else set()
    for name, p in m.encoder.named_parameters():
        frozen = (r.late_mux_freeze_backbone and name not in shared) or (
            name == "embeddings.word.weight" and r.freeze_word_embeddings
        )
        p.requires_grad_(not frozen)
    return m


def _train_late(
    pipe: StageContext, shape: MuxShape, tmp: Path, base: MuxSequenceClassifier | None = None
) -> dict:
    r = pipe.recipe
    m = from_baseline(pipe, shape, base)
    # the frozen model's own un-multiplexed outputs are the targets (RevMUX's choice)
    teacher = base if base is not None else pipe.baseline()
    cfg = TrainConfig.from_recipe(
        r,
        r.mux_finetune_steps,
        retrieval_weight=r.retrieval_weight,
        distill_weight=r.distill_weight,
        hidden_distill_weight=r.late_mux_align,
        lr=r.late_mux_lr,
    )
    desc = f"late mux fine-tune N={shape.n}{shape.suffix}"
    kw: dict = {"teacher": teacher, "special_ids": pipe.special_ids, "desc": desc}
    if r.late_mux_freeze_backbone and shape.layers:
        # the frozen layers' outputs and the teacher's are computed once, not per step
        kw.update(train_fn=train_late_frozen, shared_lr=r.late_mux_shared_lr)
    else:
        kw["teacher_logits"] = pipe.teacher_logits() if base is None else None
    stats = stage_rule(pipe).train(
        m,
        pipe.train_items,
        cfg,
        what=desc,
        cap_field="mux_finetune_steps",
        device=pipe.device,
        **kw,
    )
    m.save(tmp / "model")
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    stopping = stats.pop("stopping")
    return {"train": stats, "stopping": stopping, "trainable_parameters": trainable}


def late_mux_model(pipe: StageContext, shape: MuxShape) -> Path:
    """The cache entry of a late-multiplexed model trained on the task (built or cached)."""
    entry, hit = pipe.cache.get_or_build(
        "mux", mux_key(pipe, shape), lambda tmp: _train_late(pipe, shape, tmp)
    )
    log.info("mux N=%d%s %s (%s)", shape.n, shape.suffix, "cache hit" if hit else "trained", entry)
    return entry


def pruned_late_mux_model(pipe: StageContext, sparsity: float, shape: MuxShape) -> Path:
    """A frozen-backbone late model at `sparsity`: the N=1 candidate is pruned and recovered
    first, then multiplexed on top of it, frozen (pruning a late model afterwards would move
    the frozen layers its combiner was trained on). Cached with the candidates."""
    pruned = Candidate(sparsity=sparsity)
    key = pruned_late_key(pipe, sparsity, shape)

    def build(tmp: Path) -> dict:
        return _train_late(pipe, shape, tmp, base=pipe.candidate(pruned))

    entry, hit = pipe.cache.get_or_build("candidate", key, build)
    how = "cache hit" if hit else "built"
    log.info("candidate s=%g N=%d%s %s (%s)", sparsity, shape.n, shape.suffix, how, entry)
    return entry
