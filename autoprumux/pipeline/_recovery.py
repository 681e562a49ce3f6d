"""Pruning with the recipe's recovery, and what the recovery reads: the baseline's outputs over
the training set, computed once per model, task and recipe and cached beside it, so a
distilling step runs only the model it trains (its logits for any distillation, its per-layer
token states for layer distillation), and the recovery's training set, which may add unlabeled
sentences distilled from those outputs alone."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autoprumux.config import Candidate
from autoprumux.data import Encoded
from autoprumux.models import MuxSequenceClassifier, fake_int8
from autoprumux.pipeline._baseline import report_stage, stage_rule, stage_scores
from autoprumux.pipeline._context import StageContext, StageReport
from autoprumux.pipeline._corpus import distils_from_tables, unlabeled_items
from autoprumux.pipeline._keys import int8_key, teacher_key
from autoprumux.training import (
    TeacherLayers,
    TrainConfig,
    predict,
    prune_in_stages,
    train_classifier,
    write_teacher_layers,
)

log = logging.getLogger("autoprumux")


def _cached_logits(pipe: StageContext, items: list[Encoded], key: dict, what: str) -> torch.Tensor:
    """The baseline's logits over `items`, computed once and cached (kind "teacher", the
    baseline's key plus `key`)."""

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        logits = predict(pipe.baseline(), items, device=pipe.device)
        save_file({"logits": logits.float().cpu()}, tmp / "logits.safetensors")
        return {"items": len(items), "seconds": time.perf_counter() - t0}

    entry, hit = pipe.cache.get_or_build("teacher", teacher_key(pipe, "logits", key), build)
    log.info("%s %s (%s)", what, "cache hit" if hit else "computed", entry)
    return load_file(entry / "logits.safetensors")["logits"]


def teacher_logits(pipe: StageContext) -> torch.Tensor | None:
    """The baseline's logits for every training item (None when the recipe does not distil, or
    trains with L2L, whose executor runs the teacher itself)."""
    if not distils_from_tables(pipe.recipe):
        return None
    if pipe.tables.logits is None:
        pipe.tables.logits = _cached_logits(pipe, pipe.train_items, {}, "teacher logits")
    return pipe.tables.logits


def recovery_set(pipe: StageContext) -> tuple[list[Encoded], torch.Tensor | None]:
    """The pruning recovery's training items (the task's, then the unlabeled ones) and the
    baseline's logits for each (None when the recipe does not distil)."""
    table = teacher_logits(pipe)
    extra, key = unlabeled_items(pipe)
    if table is None or not extra:
        return list(pipe.train_items), table

    more = _cached_logits(pipe, extra, key, "teacher logits of unlabeled text")
    return [*pipe.train_items, *extra], torch.cat([table, more])


def teacher_layers(pipe: StageContext) -> TeacherLayers | None:
    """The baseline's per-layer token states for every item of the recovery set (fp16,
    memory-mapped: about 50 KB per item and layer at 64 tokens; see `write_teacher_layers`).
    None unless the recipe distils layers (`recovery_layer_distill`) and has the logits
    table."""
    if not pipe.recipe.recovery_layer_distill or teacher_logits(pipe) is None:
        return None
    if pipe.tables.layers is None:
        extra, unlabeled = unlabeled_items(pipe)
        items = [*pipe.train_items, *extra]

        def build(tmp: Path) -> dict:
            t0 = time.perf_counter()
            shape = write_teacher_layers(pipe.baseline(), items, tmp, device=pipe.device)
            return {**shape, "seconds": time.perf_counter() - t0}

        key = teacher_key(pipe, "layers", unlabeled)
        entry, hit = pipe.cache.get_or_build("teacher", key, build)
        log.info("teacher layer states %s (%s)", "cache hit" if hit else "computed", entry)
        pipe.tables.layers = TeacherLayers(entry)
    return pipe.tables.layers


def prune(
    pipe: StageContext,
    model: MuxSequenceClassifier,
    sparsity: float,
    *,
    desc: str = "",
    on_stage: StageReport | None = None,
) -> dict:
    """Prune `model` in place to `sparsity` (see `prune_in_stages`), recovering with
    distillation from the baseline over the recovery set, each stage until the validation split
    plateaus (at most its share of `recovery_steps`, its best weights kept: `stage_rule`); each
    stage's dev and validation metrics (one pairing, `stage_scores`) are recorded, and its losses
    passed to `on_stage(stage, dev loss, validation loss)` (`stage_losses`).
    Returns per-stage stats (with each stage's ``stopping``)."""
    r = pipe.recipe
    items, logits = recovery_set(pipe)
    return prune_in_stages(
        model,
        sparsity,
        pipe.train_items,
        recovery_items=items,
        teacher=pipe.baseline(),
        stages=r.prune_stages,
        recovery_steps=r.recovery_steps,
        schedule=r.recovery_schedule,
        importance_examples=r.importance_examples,
        plan_cost=r.plan_cost,
        seed=r.seed,
        train_cfg=lambda steps: TrainConfig.from_recipe(
            r,
            steps,
            distill_weight=r.distill_weight,
            retrieval_weight=r.retrieval_weight if model.n > 1 else 0.0,
            layer_distill_weight=r.recovery_layer_distill if model.n == 1 else 0.0,
        ),
        score=lambda m: stage_scores(pipe, m),
        special_ids=pipe.special_ids,
        device=pipe.device,
        desc=desc,
        on_stage=None if on_stage is None else lambda s, st: report_stage(pipe, on_stage, s, st),
        teacher_logits=logits,
        teacher_layers=teacher_layers(pipe) if model.n == 1 else None,
        stopping=stage_rule(pipe),
    )


def int8_recovered(
    pipe: StageContext, config: Candidate, model: MuxSequenceClassifier
) -> MuxSequenceClassifier:
    """`config`'s fp32 `model` distilled from the baseline for the recipe's
    `int8_recovery_steps` while computing as int8 will (`fake_int8`), built or cached."""
    r = pipe.recipe
    key = int8_key(pipe, *pipe.prumux_shape(config))

    def build(tmp: Path) -> dict:
        m = copy.deepcopy(model)
        cfg = TrainConfig.from_recipe(r, r.int8_recovery_steps, distill_weight=r.distill_weight)
        with fake_int8(m, pipe.int8_calibration(m)):
            stats = train_classifier(
                m,
                pipe.train_items,
                cfg,
                teacher=pipe.baseline(),
                special_ids=pipe.special_ids,
                desc=f"int8 recovery {config.describe()}",
                device=pipe.device,
                teacher_logits=pipe.teacher_logits(),
            )
        m.save(tmp / "model")
        return stats

    entry, _ = pipe.cache.get_or_build("int8_recovered", key, build)
    return pipe.load_model(entry, r.freeze_word_embeddings)
