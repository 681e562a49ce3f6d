"""Training until a validation metric stops improving: the plateau rule (`PlateauStop`), the loop
that evaluates every K steps and keeps the best weights (`train_until_plateau`), the same rule for
the candidates' stages (`StoppingRule`: pruning recovery, the mux fine-tunes, the students), and
the one line that says whether a run converged (`describe_convergence`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autoprumux.data import Encoded
from autoprumux.models import MuxSequenceClassifier
from autoprumux.training._config import AnnealOnPlateau, TrainConfig
from autoprumux.training._loop import train_classifier

log = logging.getLogger("autoprumux")


class PlateauStop:
    """Stops after `patience` evaluations in a row that do not beat the best validation metric
    by more than `min_delta` points. Records the learning curve (step, train loss, metric)."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience ({patience!r}) must be a positive integer")
        if not (min_delta >= 0.0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta ({min_delta!r}) must be a finite number >= 0")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.curve: list[dict[str, float]] = []
        self.best_metric = -math.inf
        self.best_step = 0
        self.last_gain: float | None = None  # the size of the latest improvement (None: the first)
        self.since_best = 0  # evaluations since the best
        self.plateau_step: int | None = None  # the step at which it first plateaued
        self.anneal_steps = 0  # the LR's decay after the plateau (`train_until_plateau`)

    def update(self, step: int, metric: float, train_loss: float = math.nan) -> bool:
        """Record one evaluation; True when it is the new best (its weights are to be kept)."""
        self.curve.append({"step": int(step), "train_loss": float(train_loss), "metric": metric})
        if metric > self.best_metric + self.min_delta:
            first = self.best_metric == -math.inf
            self.last_gain = None if first else metric - self.best_metric
            self.best_metric, self.best_step, self.since_best = metric, int(step), 0
            return True
        self.since_best += 1
        if self.plateau_step is None and self.stopped:
            self.plateau_step = int(step)
        return False

    @property
    def stopped(self) -> bool:
        """The metric has plateaued: `patience` evaluations without an improvement."""
        return self.since_best >= self.patience

    def summary(self, cap: int) -> dict[str, Any]:
        """What the cache and MLflow record: converged or capped, the steps trained, the best
        evaluation, the latest improvement and the curve."""
        steps = self.curve[-1]["step"] if self.curve else 0
        return {
            "converged": self.plateau_step is not None,
            "steps": steps,
            "plateau_step": self.plateau_step,
            "anneal_steps": self.anneal_steps,
            "cap": cap,
            "best_step": self.best_step,
            "best_metric": None if not self.curve else self.best_metric,
            "last_gain": self.last_gain,
            "steps_since_best": steps - self.best_step,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "curve": list(self.curve),
        }


def train_until_plateau(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    validate: Callable[[MuxSequenceClassifier], float],
    stop: PlateauStop,
    eval_every: int,
    *,
    anneal: float = 0.0,
    what: str = "baseline",
    cap_field: str = "finetune_steps",
    train_fn: Callable[..., dict[str, Any]] = train_classifier,
    **kw: Any,
) -> dict[str, Any]:
    """`train_fn` (`train_classifier`, or a loop with the same `on_step` hook) for at most
    `cfg.steps` steps, `validate(model)` every `eval_every` steps and at the last; it stops once
    `stop` sees a plateau and the model ends with the weights of its best evaluation. The stats
    add ``stopping`` (`PlateauStop.summary`); `what` and `cap_field` name the run and its cap in
    the log line (`describe_convergence`).
    With `anneal` > 0 the plateau does not stop it: the LR decays linearly from there to 0 over
    `anneal` x the steps trained so far (whole evaluation intervals; `AnnealOnPlateau`), still
    validated, and it stops at the end of that decay (or the cap). `train_fn` takes `schedule`.
    The L2L trainers ("l2l", "auto") train all `cfg.steps` and are validated once at the end:
    the executor's host weights are not settled between steps."""
    if cfg.trainer != "standard":
        stats = train_fn(model, train, cfg, **kw)
        stop.update(cfg.steps, validate(model), stats.get("final_loss", math.nan))
        return {**stats, "stopping": stop.summary(cfg.steps)}
    best: dict[str, torch.Tensor] | None = None
    schedule = AnnealOnPlateau(cfg)

    def on_step(step: int, loss: float) -> bool:
        nonlocal best
        if step % eval_every and step != cfg.steps:
            return False
        if stop.update(step, validate(model), loss):
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.train()
        if schedule.end is not None:
            return step >= schedule.end
        if stop.stopped and anneal > 0:
            intervals = max(1, math.ceil(anneal * step / eval_every))
            schedule.begin(step, intervals * eval_every)
            stop.anneal_steps = schedule.length
            return False
        return stop.stopped

    if anneal > 0:
        kw["schedule"] = schedule
    stats = train_fn(model, train, cfg, on_step=on_step, **kw)
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    summary = stop.summary(cfg.steps)
    log.info("%s", describe_convergence(summary, "metric", what, cap_field))
    return {**stats, "stopping": summary}


@dataclass(frozen=True)
class StoppingRule:
    """The baseline's stopping rule for a candidate's training stage: `validate(model)` (the
    validation split's metric, in points; None: no split) every `eval_every` steps, stopped after
    `patience` evaluations without a gain of more than `min_delta`, the best evaluation's weights
    kept; the stage's step count is the cap (see `train`)."""

    validate: Callable[[Any], float] | None
    eval_every: int
    patience: int
    min_delta: float = 0.0
    anneal: float = 0.0

    def train(
        self,
        model: Any,
        train: Sequence[Encoded],
        cfg: TrainConfig,
        *,
        what: str,
        cap_field: str,
        train_fn: Callable[..., dict[str, Any]] = train_classifier,
        **kw: Any,
    ) -> dict[str, Any]:
        """`train_until_plateau` with this rule; the stats add ``stopping``. A stage whose
        evaluations could choose nothing trains its cap without them and says why: no
        validation split, a cap within one evaluation interval (its only evaluation would be
        its last step), or an L2L trainer (validated only at its end)."""
        why = None
        if self.validate is None:
            why = "no validation split"
        elif cfg.steps <= self.eval_every:
            why = f"its cap is within one evaluation interval (eval_every {self.eval_every})"
        elif cfg.trainer != "standard":
            why = f"the {cfg.trainer} trainer trains its cap (validated only at its end)"
        if why is None and self.validate is not None:
            stop = PlateauStop(self.patience, self.min_delta)
            return train_until_plateau(
                model, train, cfg, self.validate, stop, self.eval_every, anneal=self.anneal,
                what=what, cap_field=cap_field, train_fn=train_fn, **kw,
            )  # fmt: skip
        stats = train_fn(model, train, cfg, **kw)
        summary = {
            **PlateauStop(self.patience, self.min_delta).summary(cfg.steps),
            "steps": int(stats.get("steps", cfg.steps)),
            "best_step": None,
            "steps_since_best": None,
            "unvalidated": why,
        }
        if cfg.steps:
            log.info("%s", describe_convergence(summary, "metric", what, cap_field))
        return {**stats, "stopping": summary}


def describe_convergence(
    s: dict[str, Any], metric: str, what: str = "baseline", cap_field: str = "finetune_steps"
) -> str:
    """One line: the run (`what`) converged (its plateau, the steps it took), or a cap stopped
    it and how far its metric on the stopping split (the split that stops training: the
    validation split unless the recipe holds out its own) may still be from a plateau (the
    latest gain, the steps since; `cap_field` is the recipe field to raise), or it trained
    without validation."""
    if not s.get("curve"):
        if s.get("unvalidated"):
            return f"{what}: trained its cap of {s['cap']} steps unvalidated ({s['unvalidated']})"
        return f"{what}: trained without a validation split (convergence unknown)"
    best = f"{s['best_metric']:.2f} at step {s['best_step']}"
    if s["converged"] and s.get("anneal_steps"):
        return (
            f"{what} converged: {metric} on the stopping split plateaued at step "
            f"{s['plateau_step']} "
            f"({s['patience']} evaluations without a gain), then the LR decayed to 0 over "
            f"{s['anneal_steps']} steps; best {best}, stopped at step {s['steps']} of at most "
            f"{s['cap']}"
        )
    if s["converged"]:
        return (
            f"{what} converged: {metric} on the stopping split plateaued at {best}; stopped at step "
            f"{s['steps']} of at most {s['cap']} after {s['patience']} evaluations without a gain"
        )
    gain = s["last_gain"]
    rising = (
        "its first evaluation"
        if gain is None
        else f"the last gain +{gain:.2f} points, {s['steps_since_best']} steps before the end"
    )
    return (
        f"{what} NOT converged: the cap of {s['cap']} steps stopped it before its {metric} on "
        f"the stopping split plateaued (best {best}; {rising}); raise {cap_field} to train it to a "
        "plateau"
    )
