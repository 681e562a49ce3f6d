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
"""

from __future__ import annotations

from collections.abc import Mapping
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


def chosen_on(validation_loss: float | None) -> str:
    """The split that chooses: validation when its loss was measured, else dev."""
    return DEV if validation_loss is None else VALIDATION


def selection_loss(
    accuracy_loss: float, validation_loss: float | None, validation_se: float | None = None
) -> float:
    """The loss a choice reads: the validation loss raised by `SELECTION_STANDARD_ERRORS` of its
    standard error `validation_se` (none when unknown), or the dev loss without a split."""
    if validation_loss is None:
        return accuracy_loss
    return validation_loss + SELECTION_STANDARD_ERRORS * (validation_se or 0.0)


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
