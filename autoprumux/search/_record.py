"""What a trial records of its measurement, and the loss every choice in a study reads.

A finished trial stores both losses as user attributes and MLflow metrics: `validation_loss`
(on the validation split: what the search chooses on, `chosen_on` "validation") and
`accuracy_loss` (on dev: what to expect), with the metrics they come from. Its budget
constraint and the guided sampler read `trial_loss`: the validation loss, or the dev loss when
the recipe has no validation split (see `autoprumux._selection`); the best trial within the
budget reads the same losses pooled along sparsity over the study's finished trials
(`pooled_trial_losses`). A trial stopped early records the loss of its last stage, scored on
dev by the pruning stages (`chosen_on` "dev"). A finished trial also records how its training
stages stopped (`stage_training`: each stage without its curve, and its line; on its MLflow run
by `log_stage_training`).

A study whose trials were recorded before trials stored their validation loss cannot be resumed:
its trials chose on dev and new ones would choose on validation (`check_recorded`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from autoprumux import tracking
from autoprumux._selection import (
    VALIDATION,
    PathPoint,
    chosen_on,
    pooled_selection_losses,
    recorded_losses,
    selection_loss,
)
from autoprumux.config import Candidate
from autoprumux.errors import ConfigError

log = logging.getLogger("autoprumux")


def trial_loss(t: Any) -> float | None:
    """The loss a choice reads for a trial (validation, else dev); None when it has none."""
    got = recorded_losses(t.user_attrs)
    return None if got is None else got.selection


def pooled_trial_losses(trials: list[Any]) -> list[float | None]:
    """The loss an answer reads for each of `trials`: validation losses pooled along sparsity
    within each kind of configuration measured on one machine (`autoprumux._selection`); None
    for a trial that records no loss."""
    points, at = [], []
    for i, t in enumerate(trials):
        got = recorded_losses(t.user_attrs)
        if got is None or t.user_attrs.get("config") is None:
            continue
        cfg = Candidate.from_dict(t.user_attrs["config"])
        machine = json.dumps(t.user_attrs.get("machine"), sort_keys=True, default=str)
        points.append(PathPoint((cfg.sparsity_kind, machine), cfg.sparsity, got))
        at.append(i)
    out: list[float | None] = [None] * len(trials)
    for i, loss in zip(at, pooled_selection_losses(points), strict=True):
        out[i] = loss
    return out


def record_evaluation(trial: Any, ev: Any, budget: float) -> dict[str, float]:
    """Store a finished trial's measurement (`Evaluation` `ev`) as its user attributes, set its
    budget constraint on the loss that chooses, and return the MLflow metrics."""
    metrics = {
        "metric": ev.candidate.metric,  # the task's metric (accuracy, MCC for CoLA, ...)
        "baseline_metric": ev.baseline.metric,
        "accuracy": ev.candidate.accuracy,
        "baseline_accuracy": ev.baseline.accuracy,
        "accuracy_loss": ev.accuracy_loss,  # on dev: what to expect
        "throughput": ev.candidate.throughput,
        "baseline_throughput": ev.baseline.throughput,
        "speedup": ev.speedup,
        "ideal_speedup": ev.ideal_speedup,
        "latency_ms": ev.candidate.latency_ms,
        "encoder_params": float(ev.candidate.encoder_params),
        "measured_sparsity": ev.candidate.sparsity,
    }
    if ev.accuracy_loss_se is not None:  # its spread
        metrics["accuracy_loss_se"] = ev.accuracy_loss_se
    if ev.validation_loss is not None:  # on validation: what chooses
        metrics.update(
            validation_loss=ev.validation_loss,
            validation_loss_se=ev.validation_loss_se,
            validation_metric=ev.candidate.validation_metric,
            baseline_validation_metric=ev.baseline.validation_metric,
        )
    for k, v in metrics.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("chosen_on", ev.chosen_on)
    # TPE's constraint: feasible when the loss that chooses is within the budget (<= 0)
    trial.set_constraint("accuracy_loss", ev.selection_loss - budget)
    trial.set_user_attr("metric_name", ev.metric_name)
    if ev.pos_label is not None:  # the class f1 scored as positive
        trial.set_user_attr("pos_label", ev.pos_label)
    stages = getattr(ev, "stages", None)  # how its training stages stopped (none: a replay)
    if stages:
        trial.set_user_attr("stage_training", [st.brief(ev.metric_label) for st in stages])
    return metrics


def log_stage_training(client: Any, run_id: str, ev: Any) -> None:
    """How a finished trial's training stages stopped, on its MLflow run
    (`tracking.log_stage_training`); bookkeeping: a failure is logged, the trial stands."""
    stages = getattr(ev, "stages", None)
    if not stages:
        return
    try:
        tracking.log_stage_training(client, run_id, stages, ev.metric_label)
    except Exception as e:  # noqa: BLE001 - bookkeeping never fails a trial
        log.warning("could not log the training stages to MLflow run %s: %s", run_id, e)


def record_stopped(trial: Any, dev: float, val: float | None, budget: float) -> None:
    """A trial stopped early: the dev and validation losses of its last step (validation None
    without a split), its constraint on the one that chooses."""
    trial.set_user_attr("accuracy_loss", dev)
    if val is not None:
        trial.set_user_attr("validation_loss", val)
    trial.set_user_attr("chosen_on", chosen_on(val))
    trial.set_constraint("accuracy_loss", selection_loss(dev, val) - budget)


def check_recorded(trials: list[Any], study: str) -> None:
    """Refuse resuming a study whose trials recorded a loss but not which split chose it."""
    old = [t for t in trials if "accuracy_loss" in t.user_attrs and "chosen_on" not in t.user_attrs]
    if old:
        raise ConfigError(
            f"study {study!r} holds {len(old)} trials measured before trials recorded their "
            "validation loss: they chose on dev, and this search chooses on the validation "
            "split, so their losses cannot be compared; pass another --study-name to start a "
            "new study (`recommend` still answers from the old one, chosen on dev)"
        )
    # finished trials that chose on a bare validation loss: new ones add its standard error
    bare = [
        t
        for t in trials
        if "speedup" in t.user_attrs
        and (got := recorded_losses(t.user_attrs)) is not None
        and got.chosen_on == VALIDATION
        and got.validation_se is None
    ]
    if bare:
        raise ConfigError(
            f"study {study!r} holds {len(bare)} trials measured before trials recorded the "
            "standard error of their validation loss: they chose on the bare loss, and this "
            "search adds one standard error, so their losses cannot be compared; pass another "
            "--study-name to start a new study (`recommend` still answers from the old one)"
        )
