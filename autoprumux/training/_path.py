"""A pruning path: one run distilled from the teacher that raises the model's sparsity gradually
from 0 to a maximum along a cubic or linear schedule, removing heads and FFN units structurally
(scored as `prune_in_stages` scores them) at each level of a grid, and handing a snapshot of
every level, after a short settle, to a callback (Zhu & Gupta's gradual schedule; movement
pruning and CoFi raise sparsity while they distil the same way)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from autoprumux._progress import progress
from autoprumux.config import PATH_SCHEDULES, path_levels
from autoprumux.data import Encoded
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier
from autoprumux.training._config import TrainConfig
from autoprumux.training._loop import train_classifier
from autoprumux.training._prune import prune_to
from autoprumux.training._teacher import TeacherLayers


def level_steps(levels: Sequence[float], total: int, schedule: str) -> list[int]:
    """The training steps of each level's share of the schedule, `total` in all: the steps over
    which the schedule's sparsity s(t) rises from the previous level to this one. "linear":
    s(t) = max x t / total; "cubic" (Zhu & Gupta): s(t) = max x (1 - (1 - t / total)^3), fast
    while the model has redundant structure, slow near the end, where each unit removed costs
    more."""
    if schedule not in PATH_SCHEDULES:
        raise ConfigError(f"path schedule ({schedule!r}) must be one of {list(PATH_SCHEDULES)}")
    top = levels[-1]

    def reached(level: float) -> float:  # the fraction of the run at which s(t) = level
        x = min(level / top, 1.0)
        return x if schedule == "linear" else 1.0 - (1.0 - x) ** (1.0 / 3.0)

    ends = [round(total * reached(level)) for level in levels]
    ends[-1] = total
    return [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def prune_path(
    model: MuxSequenceClassifier,
    train_items: Sequence[Encoded],
    *,
    teacher: MuxSequenceClassifier,
    max_sparsity: float,
    step: float,
    schedule: str,
    steps: int,
    settle_steps: int,
    importance_examples: int,
    plan_cost: str,
    seed: int,
    train_cfg: Callable[[int], TrainConfig],
    level_metric: Callable[[MuxSequenceClassifier], float],
    snapshot: Callable[[float, MuxSequenceClassifier, float], None],
    special_ids: tuple[int, ...],
    device: torch.device | str,
    start: int = 0,
    teacher_logits: torch.Tensor | None = None,
    teacher_layers: TeacherLayers | None = None,
    desc: str = "path",
    sublayers_per_level: int | None = None,
) -> list[dict]:
    """Prune `model` in place along the path to `max_sparsity`, one level of `path_levels` at a
    time, in order. At each level the least important heads, FFN units and sub-layers are
    removed down to the level (Fisher importance on `importance_examples` training items drawn
    with a seed of the level's own, weighed by `plan_cost`, at most `sublayers_per_level`
    whole sub-layers a level, see `prune_to`; a model already
    there loses nothing, so the measured sparsity never falls), then the model trains its
    share of `steps` (`level_steps` by `schedule`) plus `settle_steps` (`train_cfg(steps)`,
    seeded per level, distilling from `teacher`; `teacher_logits` / `teacher_layers` spare
    running it, see `train_classifier`), is scored by `level_metric`, and is passed to
    `snapshot(level, model, metric)`, which may save it (or raise to stop the path).
    `start` levels are taken as done: `model` is then the snapshot of level `start` (1-based)
    and the path goes on from the next, training and pruning exactly as an unbroken run would
    (each level's optimizer, data order and scoring sample depend on the level alone).
    A progress bar shows each level's sparsity, metric and training steps/s. Returns the stats
    of the levels built here."""
    levels = path_levels(max_sparsity, step)
    shares = level_steps(levels, steps, schedule)
    if not 0 <= start <= len(levels):
        raise ValueError(f"start ({start}) must be in 0..{len(levels)}")
    stats: list[dict] = []
    bar = progress(len(levels), desc)
    bar.update(start)
    for i in range(start, len(levels)):
        level = levels[i]
        gen = torch.Generator().manual_seed(seed * 1009 + i)
        order = torch.randperm(len(train_items), generator=gen).tolist()
        prune_to(
            model,
            level,
            train_items,
            order,
            importance_examples,
            device,
            plan_cost,
            sublayers_per_level,
        )
        trained = shares[i] + settle_steps
        cfg = train_cfg(trained)
        cfg = replace(cfg, seed=cfg.seed + i)
        tr = train_classifier(
            model,
            list(train_items),
            cfg,
            teacher=teacher,
            special_ids=special_ids,
            desc=f"{desc} s={level:g}",
            device=device,
            teacher_logits=teacher_logits,
            teacher_layers=teacher_layers,
        )
        t0 = time.perf_counter()
        metric = level_metric(model)
        measured = model.sparsity()
        stats.append(
            {
                "level": level,
                "sparsity": measured,
                "heads": list(model.encoder.config.heads),
                "ffn": list(model.encoder.config.ffn),
                "steps": trained,
                "train": tr,
                "metric": metric,
                "metric_seconds": time.perf_counter() - t0,
            }
        )
        rate = tr["steps"] / tr["seconds"] if tr.get("seconds") else 0.0
        bar.set_postfix(
            {"sparsity": f"{measured:.3f}", "metric": f"{metric:.2f}", "steps/s": f"{rate:.2g}"}
        )
        snapshot(level, model, metric)
        bar.update(1)
    bar.close()
    return stats
