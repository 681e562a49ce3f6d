"""The pruning path of a pipeline (N=1): one run distilled from the baseline over the training
items that raises the sparsity level by level (`training.prune_path`), each level's snapshot a
cache entry of its own (kind "path", `path_key`), so a killed path resumes at its last saved
level and a built one is read, never trained again."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from autoprumux.config import MuxShape, level_of
from autoprumux.errors import ConfigError
from autoprumux.evaluation import this_machine
from autoprumux.models import MuxSequenceClassifier
from autoprumux.pipeline._baseline import stage_rule, validation_metric
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._keys import path_key, snapshot_key
from autoprumux.pipeline._mux import pruned_before_mux
from autoprumux.pipeline._recovery import teacher_logits
from autoprumux.training import TrainConfig, level_steps, prune_path

log = logging.getLogger("autoprumux")


@dataclass(frozen=True)
class PathLevel:
    """One built level of the path: its grid level, the snapshot's measured sparsity, its
    validation metric (dev's without a validation split: `scored_on`), the training steps and
    seconds the level took (pruning and scoring included), the machine that built it (None for
    a level saved before that was recorded) and its cache entry."""

    level: float
    sparsity: float
    metric: float
    scored_on: str
    steps: int
    seconds: float
    machine: str | None
    entry: Path


def path_level(pipe: StageContext, sparsity: float) -> float:
    """`sparsity` as a level of the recipe's path grid; a sparsity off the grid is refused."""
    grid = pipe.recipe.path_grid
    level = level_of(grid, sparsity)
    if level is None:
        raise ConfigError(
            f"sparsity {sparsity:g} is not a level of the pruning path (path_step "
            f"{pipe.recipe.path_step:g} up to path_max_sparsity "
            f"{pipe.recipe.path_max_sparsity:g}: {grid}); choose one of these, or recovery "
            "'separate'"
        )
    return level


def served_sparsity(pipe: StageContext, sparsity: float, shape: MuxShape) -> float:
    """`sparsity` as the path's level where the path serves the pruned model (an N=1 model,
    or the N=1 model a pruned late mux model is built on, with the recipe's recovery "path"),
    else as given."""
    r = pipe.recipe
    if r.serves_from_path(sparsity, shape) or (
        pruned_before_mux(r, sparsity, shape) and r.serves_from_path(sparsity, MuxShape())
    ):
        return path_level(pipe, sparsity)
    return sparsity


def _level(pipe: StageContext, entry: Path) -> PathLevel:
    meta = pipe.cache.meta(entry)
    return PathLevel(
        meta["level"],
        meta["sparsity"],
        meta["metric"],
        meta["scored_on"],
        meta.get("steps", 0),
        meta.get("seconds", 0.0),
        meta.get("machine"),
        entry,
    )


def build_path(pipe: StageContext) -> list[PathLevel]:
    """Every level of the path, built or read from the cache. The levels already saved are
    read; the path goes on from the last of them (its snapshot reloaded: the same weights), so
    a killed path loses at most the level it was building."""
    grid = pipe.recipe.path_grid
    done = 0
    while done < len(grid) and pipe.cache.has("path", path_key(pipe, grid[done])):
        done += 1
    if done < len(grid):
        log.info("pruning path: %d of %d levels cached, on from s=%g", done, len(grid), grid[done])
        _train(pipe, done, grid)
    else:
        log.info("pruning path: all %d levels cached", len(grid))
    return [_level(pipe, pipe.cache.entry("path", path_key(pipe, level))) for level in grid]


def _train(pipe: StageContext, done: int, grid: list[float]) -> None:
    r = pipe.recipe
    teacher = pipe.baseline()
    # the whole model trains but for the word embeddings when the recipe freezes them, as
    # `load_model` leaves the baseline and every snapshot
    if done == 0:
        model = copy.deepcopy(teacher)
    else:
        entry = pipe.cache.entry("path", path_key(pipe, grid[done - 1]))
        model = pipe.load_model(entry, r.freeze_word_embeddings)
    scored_on = "validation" if pipe.validation_items else "dev"
    shares = dict(zip(grid, level_steps(grid, r.path_steps, r.path_schedule), strict=True))
    since = time.perf_counter()  # when the level being built started
    where = this_machine(str(pipe.device)).describe()

    def metric(m: MuxSequenceClassifier) -> float:
        if pipe.validation_items:
            return validation_metric(pipe, m)
        return pipe.dev_metrics(m, pairings=1)["metric"]

    def snapshot(level: float, m: MuxSequenceClassifier, value: float) -> None:
        nonlocal since

        def build(tmp: Path) -> dict:
            m.save(tmp / "model")
            return {
                "level": level,
                "sparsity": m.sparsity(),
                "metric": value,
                "scored_on": scored_on,
                "scored_by": [pipe.task.metric, pipe.task.pos_label],
                "steps": shares[level] + r.path_settle_steps,
                "seconds": time.perf_counter() - since,
                "machine": where,
                "heads": list(m.encoder.config.heads),
                "ffn": list(m.encoder.config.ffn),
            }

        entry, _ = pipe.cache.get_or_build("path", path_key(pipe, level), build)
        log.info("pruning path s=%g saved (%s)", level, entry)
        since = time.perf_counter()

    distils = r.path_distill_weight > 0
    prune_path(
        model,
        pipe.train_items,
        teacher=teacher,
        max_sparsity=r.path_max_sparsity,
        step=r.path_step,
        schedule=r.path_schedule,
        steps=r.path_steps,
        settle_steps=r.path_settle_steps,
        importance_examples=r.path_importance_examples,
        plan_cost=r.path_plan_cost,
        sublayers_per_level=r.path_sublayers_per_level,
        seed=r.path_draw,
        train_cfg=lambda steps: TrainConfig.from_recipe(
            r, steps, distill_weight=r.path_distill_weight, lr=r.path_lr, seed=r.path_draw
        ),
        level_metric=metric,
        snapshot=snapshot,
        special_ids=pipe.special_ids,
        device=pipe.device,
        start=done,
        teacher_logits=teacher_logits(pipe) if distils else None,
    )


def path_snapshot(pipe: StageContext, sparsity: float) -> MuxSequenceClassifier:
    """The path's snapshot at the grid level `sparsity` (the path built first if need be)."""
    key = path_key(pipe, path_level(pipe, sparsity))
    if not pipe.cache.has("path", key):
        build_path(pipe)
    return pipe.load_model(pipe.cache.entry("path", key), pipe.recipe.freeze_word_embeddings)


def served_snapshot(pipe: StageContext, sparsity: float) -> MuxSequenceClassifier:
    """The model a configuration served by the path gets at `sparsity`: the level's snapshot,
    recovered further at its shape when the recipe says so (`snapshot_recovery_steps`)."""
    snapshot = path_snapshot(pipe, sparsity)
    if not pipe.recipe.snapshot_recovery_steps:
        return snapshot
    return snapshot_recovered(pipe, path_level(pipe, sparsity), snapshot)


def snapshot_recovered(
    pipe: StageContext, level: float, snapshot: MuxSequenceClassifier
) -> MuxSequenceClassifier:
    """The path's `snapshot` at `level` trained further at its shape, as a recovery stage
    trains (distilled from the baseline over the training items, at most the recipe's
    `snapshot_recovery_steps`, stopped on the validation plateau, its best weights kept),
    built or cached."""
    r = pipe.recipe

    def build(tmp: Path) -> dict:
        m = copy.deepcopy(snapshot)
        for p in m.parameters():
            p.requires_grad_(True)
        if r.freeze_word_embeddings:
            m.encoder.embeddings.word.weight.requires_grad_(False)
        what = f"snapshot recovery s={level:g}"
        stats = stage_rule(pipe).train(
            m,
            pipe.train_items,
            TrainConfig.from_recipe(r, r.snapshot_recovery_steps, distill_weight=r.distill_weight),
            what=what,
            cap_field="snapshot_recovery_steps",
            teacher=pipe.baseline(),
            special_ids=pipe.special_ids,
            desc=what,
            device=pipe.device,
            teacher_logits=pipe.teacher_logits(),
        )
        m.save(tmp / "model")
        stopping = stats.pop("stopping")
        return {"train": stats, "stopping": stopping, "level": level}

    entry, hit = pipe.cache.get_or_build("snapshot", snapshot_key(pipe, level), build)
    log.info("snapshot s=%g recovered %s (%s)", level, "cache hit" if hit else "built", entry)
    return pipe.load_model(entry, r.freeze_word_embeddings)
