"""How a configuration's training stages stopped, read back from their cache entries for
reports: each stage's `StoppingRule` record (converged or capped, the steps taken, the best step
and validation metric, the curve; see `PlateauStop.summary`). Nothing is built here: a stage
not built yet is left out."""

from __future__ import annotations

from typing import Any

from autoprumux.config import Candidate
from autoprumux.pipeline._context import StageContext
from autoprumux.pipeline._keys import (
    early_mux_key,
    mux_key,
    pruned_key,
    pruned_late_key,
    students_key,
)
from autoprumux.pipeline._mux import pruned_before_mux


def _meta(pipe: StageContext, kind: str, key: dict) -> dict[str, Any] | None:
    return pipe.cache.meta(pipe.cache.entry(kind, key)) if pipe.cache.has(kind, key) else None


def stage_training(pipe: StageContext, config: Candidate) -> dict[str, Any]:
    """The stopping records of `config`'s built stages: ``mux`` (the N-way task fine-tune, early
    or late), ``recovery`` (one per pruning stage), ``students`` (one per student's boosting) and
    ``stacking``. Empty for the baseline (see `StageContext.baseline_training`) and for stages
    not built yet; a record is None where its entry was built before records were kept."""
    if config.technique == "students":
        meta = _meta(pipe, "students", students_key(pipe, config.students, config.student_depth))
        if meta is None:
            return {}
        d = meta.get("distillation", {})
        return {
            "students": [t.get("stopping") for t in d.get("student_train", [])],
            "stacking": d.get("stacking_train", {}).get("stopping"),
        }
    sparsity, shape = pipe.prumux_shape(config)
    out: dict[str, Any] = {}
    if pruned_before_mux(pipe.recipe, sparsity, shape):
        out.update(stage_training(pipe, Candidate(sparsity=sparsity)))  # the pruned N=1 model
        meta = _meta(pipe, "candidate", pruned_late_key(pipe, sparsity, shape))
        if meta is not None:
            out["mux"] = meta.get("stopping")
        return out
    if shape.n > 1:
        key = mux_key(pipe, shape) if shape.late else early_mux_key(pipe, shape)
        meta = _meta(pipe, "mux", key)
        if meta is not None:
            out["mux"] = meta.get("stopping")
    if sparsity == 0:
        return out
    kind, key = pruned_key(pipe, sparsity, shape)
    meta = _meta(pipe, kind, key) if kind != "path" else None  # a path level has no stage
    if meta is not None:
        stages = meta.get("stages", [meta])  # a recovered snapshot: one stage
        out["recovery"] = [st.get("stopping") for st in stages]
    return out
