"""A candidate's training stages as reports show them: the record of
`PruMuxPipeline.stage_training` (``mux``, ``recovery`` per pruning stage, ``students`` per
student, ``stacking``; each a `PlateauStop.summary`, or None where its cache entry was built
before stages recorded how they stopped) flattened into one `StageRun` per stage, in the
record's order (the order they trained in), with its name, the recipe field that caps it and how
it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# the record's keys: (the name shown, the recipe field that caps the stage)
STAGES = {
    "mux": ("mux fine-tune", "mux_finetune_steps"),
    "recovery": ("recovery stage", "recovery_steps"),
    "students": ("student", "student_steps"),
    "stacking": ("stacking distillation", "student_stacking_steps"),
}
# how a stage stopped (`StageRun.stopped`)
CONVERGED, CAPPED, UNVALIDATED, UNRECORDED = "converged", "cap", "unvalidated", "unrecorded"


@dataclass(frozen=True)
class StageRun:
    """One training stage: `key` names it in MLflow (``stage.<key>.*``: "mux", "recovery.1",
    "student.2", "stacking"), `name` in reports ("recovery stage 1/2"), `cap_field` is the
    recipe field to raise when its cap stopped it; `stopping` its record (None: not recorded)."""

    key: str
    name: str
    cap_field: str
    stopping: dict[str, Any] | None

    @property
    def stopped(self) -> str:
        """ "converged" (its validation metric plateaued), "cap" (the recipe's step count stopped
        it first), "unvalidated" (it trained its cap without validation) or "unrecorded"."""
        s = self.stopping
        if s is None:
            return UNRECORDED
        if s.get("converged"):
            return CONVERGED
        return CAPPED if s.get("curve") else UNVALIDATED

    def describe(self, metric: str) -> str:
        """One line: converged, capped (and the field to raise) or unvalidated (and why)."""
        if self.stopping is None:
            return (
                f"{self.name}: built before training stages recorded how they stopped "
                "(convergence unknown)"
            )
        from autoprumux.training import describe_convergence  # loading an export needs none

        return describe_convergence(self.stopping, metric, self.name, self.cap_field)

    def brief(self, metric: str) -> dict[str, Any]:
        """The record without its curve, and its line (`describe`): for manifests, MLflow and
        trials."""
        s = self.stopping or {}
        return {
            "stage": self.key,
            "name": self.name,
            "stopped": self.stopped,
            "converged": bool(s.get("converged")),
            "steps": s.get("steps"),
            "cap": s.get("cap"),
            "cap_field": self.cap_field,
            "best_step": s.get("best_step"),
            "best_metric": s.get("best_metric"),
            "unvalidated": s.get("unvalidated"),
            "line": self.describe(metric),
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole record, curve included, named (for JSON reports)."""
        return {
            "stage": self.key,
            "name": self.name,
            "stopped": self.stopped,
            "cap_field": self.cap_field,
            **(self.stopping or {}),
        }


def stage_runs(record: dict[str, Any] | None) -> list[StageRun]:
    """`record` (see the module docstring) as one `StageRun` per stage, in its order (the mux
    fine-tune before the recoveries that prune it, or after them for a late mux model that is
    pruned first; the students, then the stacking). Keys it does not know are left out."""
    out: list[StageRun] = []
    for kind, got in (record or {}).items():
        if kind not in STAGES:
            continue
        name, cap_field = STAGES[kind]
        if not isinstance(got, list):
            out.append(StageRun(kind, name, cap_field, got))
            continue
        key = "student" if kind == "students" else kind
        for i, s in enumerate(got, 1):
            out.append(StageRun(f"{key}.{i}", f"{name} {i}/{len(got)}", cap_field, s))
    return out
