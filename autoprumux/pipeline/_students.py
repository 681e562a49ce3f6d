"""Academus students of a pipeline's baseline: K boosted shallow students, built or cached, and
measured beside the baseline. Each student's boosting and the stacking stop on the validation
split's plateau (the metric of the ensemble so far), at most `student_steps` and
`student_stacking_steps`, and keep their best weights (`_baseline.stage_rule`); the held-out
residuals are measured on the validation split too: the dev set only reports."""

from __future__ import annotations

import logging
from pathlib import Path

from autoprumux.config import Candidate, check_precision
from autoprumux.evaluation import Evaluation, ThroughputConfig
from autoprumux.models import AnyModel, StudentConfig, StudentEnsemble
from autoprumux.pipeline._baseline import stage_rule
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._corpus import corpus_items
from autoprumux.pipeline._keys import students_key
from autoprumux.training import StudentTrainConfig, distill_students

log = logging.getLogger("autoprumux")


def build_students(pipe: StageContext, k: int, depth: int) -> StudentEnsemble:
    """K students of `depth` layers distilled from the baseline (built or cached) over the
    training set plus the recipe's `student_unlabeled` warm-up corpus sentences; their layers
    start from the baseline's, or from the pruning path's snapshot at `student_start`."""
    r = pipe.recipe
    cfg = StudentConfig(k=k, depth=depth, pooling=r.student_pooling)
    extra, extra_key = corpus_items(pipe, r.student_unlabeled) if r.student_unlabeled else ([], {})

    def build(tmp: Path) -> dict:
        start = pipe.path_snapshot(r.student_start) if r.student_start else None
        ens, stats = distill_students(
            pipe.baseline(),
            [*pipe.train_items, *extra],
            cfg,
            StudentTrainConfig.from_recipe(r),
            device=pipe.device,
            heldout=pipe.validation_items[:256],
            stopping=stage_rule(pipe),
            start=start,
        )
        ens.save(tmp / "model", extra={"distillation": stats})
        return {"distillation": stats}

    entry, hit = pipe.cache.get_or_build("students", students_key(pipe, k, depth, extra_key), build)
    log.info("students K=%d d=%d %s (%s)", k, depth, "cache hit" if hit else "built", entry)
    return StudentEnsemble.load(entry / "model").to(pipe.device)


def evaluate_students(
    pipe: StageContext,
    k: int,
    depth: int,
    active: int | None,
    throughput: ThroughputConfig | None,
    precision: str,
) -> tuple[Evaluation, AnyModel]:
    """K students beside the fp32 baseline, and the converted ensemble it scored and timed."""
    check_precision(precision, str(pipe.device))
    tp = throughput or ThroughputConfig(device=str(pipe.device))
    pipe.check_lengths(1, tp)
    pipe.baseline()  # first: the students distil it
    ens = pipe.students(k, depth)
    if active is not None:
        ens.active_students = active
    name = f"K={k},d={depth}" + (f",active={active}" if active is not None else "")
    if pipe.recipe.student_start:
        name += f",from s={pipe.recipe.student_start:g}"
    config = Candidate(technique="students", students=k, student_depth=depth)
    converted = pipe.converted(ens, precision)
    name = precision_name(name, precision)
    return pipe.beside_baseline(
        name, converted, tp, training=pipe.stage_training(config)
    ), converted


def precision_name(name: str, precision: str) -> str:
    return name if precision == "fp32" else f"{name},{precision}"
