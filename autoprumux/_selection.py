"""Which loss chooses, and which one reports: the validation split chooses, the dev set reports.

Every measured configuration has two accuracy losses (baseline metric minus candidate metric, in
points), each scored the same way (a multiplexed model's over the same seeded pairings):

- `validation_loss`: on the validation split (`data.validation_split`: held out of train, never
  trained on); for a candidate that trained nothing of its own, on the validation and stopping
  splits together (`pipeline._baseline.choosing_split`). Everything chosen by measurement reads
  it: the search's budget constraint and pruner-free feasibility tests, the guided sampler, the
  best trial within the budget, the meta-model's loss target and `recommend`'s answer.
- `accuracy_loss`: on the dev set, the figure a user should expect. It only reports: choosing
  the fastest configuration whose dev loss is within the budget makes the winner's dev loss
  optimistic (the winner's curse: on SST-2's 872 dev sentences one loss is +-1.5 points).

Without a validation split (the recipe's `validation_examples` 0, or too few training examples),
or for trials recorded before validation losses were, the dev loss chooses and every output says
so in one line (`DEV_CHOSEN`). `selection_loss` is the loss that chose; `chosen_on` names it.

The validation split is small (a few hundred texts), so one validation loss is noisy by about a
point, and every candidate is scored on the same draw. A choice therefore reads the
validation loss plus `SELECTION_STANDARD_ERRORS` of its paired standard error
(`validation_loss_se`, from the examples on which candidate and baseline disagree): a
configuration is within a budget when its loss is within it with about 84% confidence (one
standard error, one-sided), not merely on this draw. A candidate that predicts as the baseline
does (int8 of it, light pruning) has a small standard error and pays little; a heavily pruned
one pays most. A record without a standard error (measured before they were recorded) chooses
on its validation loss alone.

An answer among several measured configurations (the search's best trial, `recommend`) reads
their validation losses **pooled along sparsity** (`pooled_selection_losses`): within each kind
of configuration (everything but its sparsity, on one machine), the losses are fitted
non-decreasing in sparsity (scikit-learn's isotonic regression, weighted by 1 / SE^2). A sparser
model of one kind holds less of the same model, so a dip in its validation loss below a denser
one's is the split's luck, not a gain; pooling averages that luck with its neighbours' instead
of choosing it. Each configuration then pays its own standard-error margin on its pooled loss.
A single trial's budget constraint (Optuna's, and the pruner's) cannot see its siblings and
reads the raw loss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

VALIDATION = "validation"
DEV = "dev"
# trials (and recommenders) recorded before trials stored their validation loss: chosen on dev
DEV_UNRECORDED = "dev (no validation loss recorded)"
CHOICES = (VALIDATION, DEV, DEV_UNRECORDED)
DEV_CHOSEN = "chosen on dev: no validation split"
DEV_CHOSEN_OLD = "chosen on dev: no validation loss recorded (measured before trials recorded one)"
# how many of its paired standard errors a validation loss is raised by before it is compared
# with a budget (one: about 84% one-sided confidence that the loss is within the budget)
SELECTION_STANDARD_ERRORS = 1.0
# the least standard error a pooled loss is weighted by: a configuration that predicts as the
# baseline does reads SE 0, and an infinite weight would pin the fit to its one draw
POOLING_MIN_SE = 0.1


def chosen_on(validation_loss: float | None) -> str:
    """The split that chooses: validation when its loss was measured, else dev."""
    return DEV if validation_loss is None else VALIDATION


def selection_loss(
    accuracy_loss: float,
    validation_loss: float | None,
    validation_se: float | None = None,
    standard_errors: float = SELECTION_STANDARD_ERRORS,
) -> float:
    """The loss a choice reads: the validation loss raised by `standard_errors` of its standard
    error `validation_se` (none when unknown), or the dev loss without a split."""
    if validation_loss is None:
        return accuracy_loss
    return validation_loss + standard_errors * (validation_se or 0.0)


class RecordedLosses(NamedTuple):
    """A record's losses: on dev (reports), on validation with its standard error (None
    without a split, or when not recorded), and the split that chose."""

    dev: float
    validation: float | None
    chosen_on: str
    validation_se: float | None = None

    @property
    def selection(self) -> float:
        """The loss that chose (`selection_loss`)."""
        return selection_loss(self.dev, self.validation, self.validation_se)


def recorded_losses(attrs: Mapping[str, Any]) -> RecordedLosses | None:
    """The losses of a trial's record (its user attributes, or a flat record); None when it
    records no loss. A record without `chosen_on` was written before validation losses were
    recorded: chosen on dev (`DEV_UNRECORDED`)."""
    if attrs.get("accuracy_loss") is None:
        return None
    dev = float(attrs["accuracy_loss"])
    val = attrs.get("validation_loss")
    on = attrs.get("chosen_on")
    if on == VALIDATION and val is not None:
        se = attrs.get("validation_loss_se")
        return RecordedLosses(dev, float(val), VALIDATION, None if se is None else float(se))
    return RecordedLosses(dev, None, on if on in (DEV, DEV_UNRECORDED) else DEV_UNRECORDED)


class PathPoint(NamedTuple):
    """One measured configuration as pooling sees it: its kind (anything hashable that equal
    configurations but for sparsity share), its sparsity and its losses."""

    kind: Hashable
    sparsity: float
    losses: RecordedLosses


def pooled_validation_losses(points: Sequence[PathPoint]) -> list[float | None]:
    """Each point's validation loss fitted non-decreasing in sparsity within its kind (isotonic,
    weighted by 1 / SE^2); None where the dev loss chose."""
    from sklearn.isotonic import IsotonicRegression

    out: list[float | None] = [p.losses.validation for p in points]
    kinds: dict[Hashable, list[int]] = defaultdict(list)
    for i, p in enumerate(points):
        if p.losses.validation is not None:
            kinds[p.kind].append(i)
    for idx in kinds.values():
        if len(idx) < 2:
            continue
        x = [points[i].sparsity for i in idx]
        y = [points[i].losses.validation for i in idx]
        w = [1.0 / max(points[i].losses.validation_se or 0.0, POOLING_MIN_SE) ** 2 for i in idx]
        fit = IsotonicRegression().fit(x, y, sample_weight=w).predict(x)
        for i, v in zip(idx, fit, strict=True):
            out[i] = float(v)
    return out


def pooled_selection_losses(
    points: Sequence[PathPoint], standard_errors: float = SELECTION_STANDARD_ERRORS
) -> list[float]:
    """The loss an answer among `points` reads for each: its pooled validation loss
    (`pooled_validation_losses`) plus `standard_errors` of its own SE, or its dev loss where
    the dev loss chose."""
    return [
        selection_loss(p.losses.dev, pooled, p.losses.validation_se, standard_errors)
        for p, pooled in zip(points, pooled_validation_losses(points), strict=True)
    ]


def dev_chosen_line(on: str) -> str | None:
    """The one line every output prints when the dev loss chose (None: validation chose)."""
    if on == VALIDATION:
        return None
    return DEV_CHOSEN_OLD if on == DEV_UNRECORDED else DEV_CHOSEN


def describe_losses(
    accuracy_loss: float, validation_loss: float | None, validation_se: float | None = None
) -> str:
    """Both losses, the one that chose first: "loss 0.40 +-0.55 pts on validation (chosen on
    0.95), 0.90 on dev (expected)"; without a validation loss the dev loss alone, said to have
    chosen."""
    if validation_loss is None:
        return f"loss {accuracy_loss:.2f} pts on dev ({DEV_CHOSEN})"
    if validation_se is None:
        on = "chosen on"
    else:
        chosen = selection_loss(accuracy_loss, validation_loss, validation_se)
        on = f"+-{validation_se:.2f}, chosen on {chosen:.2f}"
    return (
        f"loss {validation_loss:.2f} pts on validation ({on}), {accuracy_loss:.2f} on dev "
        "(expected)"
    )
