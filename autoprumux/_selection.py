"""Which loss chooses, and which one reports: the validation split chooses, the dev set reports.

Every measured configuration has two accuracy losses (baseline metric minus candidate metric, in
points), each scored the same way (a multiplexed model's over the same seeded pairings):

- `validation_loss`: on the validation split (`data.validation_split`: held out of train, never
  trained on). Everything chosen by measurement reads it: the search's budget constraint and
  pruner-free feasibility tests, the guided sampler, the best trial within the budget, the
  meta-model's loss target and `recommend`'s answer.
- `accuracy_loss`: on the dev set, the figure a user should expect. It only reports: choosing
  the fastest configuration whose dev loss is within the budget makes the winner's dev loss
  optimistic (the winner's curse: on SST-2's 872 dev sentences one loss is +-1.5 points).

Without a validation split (the recipe's `validation_examples` 0, or too few training examples),
or for trials recorded before validation losses were, the dev loss chooses and every output says
so in one line (`DEV_CHOSEN`). `selection_loss` is the loss that chose; `chosen_on` names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VALIDATION = "validation"
DEV = "dev"
# trials (and recommenders) recorded before trials stored their validation loss: chosen on dev
DEV_UNRECORDED = "dev (no validation loss recorded)"
CHOICES = (VALIDATION, DEV, DEV_UNRECORDED)
DEV_CHOSEN = "chosen on dev: no validation split"
DEV_CHOSEN_OLD = "chosen on dev: no validation loss recorded (measured before trials recorded one)"


def chosen_on(validation_loss: float | None) -> str:
    """The split that chooses: validation when its loss was measured, else dev."""
    return DEV if validation_loss is None else VALIDATION


def selection_loss(accuracy_loss: float, validation_loss: float | None) -> float:
    """The loss a choice reads: the validation loss, or the dev loss without a split."""
    return accuracy_loss if validation_loss is None else validation_loss


def recorded_losses(attrs: Mapping[str, Any]) -> tuple[float, float | None, str] | None:
    """(dev loss, validation loss or None, chosen_on) of a trial's record (its user attributes,
    or a flat record); None when it records no loss. A record without `chosen_on` was written
    before validation losses were recorded: chosen on dev (`DEV_UNRECORDED`)."""
    if attrs.get("accuracy_loss") is None:
        return None
    dev = float(attrs["accuracy_loss"])
    val = attrs.get("validation_loss")
    on = attrs.get("chosen_on")
    if on == VALIDATION and val is not None:
        return dev, float(val), VALIDATION
    return dev, None, on if on in (DEV, DEV_UNRECORDED) else DEV_UNRECORDED


def dev_chosen_line(on: str) -> str | None:
    """The one line every output prints when the dev loss chose (None: validation chose)."""
    if on == VALIDATION:
        return None
    return DEV_CHOSEN_OLD if on == DEV_UNRECORDED else DEV_CHOSEN


def describe_losses(accuracy_loss: float, validation_loss: float | None) -> str:
    """Both losses, the one that chose first: "loss 0.40 pts on validation (chosen on), 0.90 on
    dev (expected)"; without a validation loss the dev loss alone, said to have chosen."""
    if validation_loss is None:
        return f"loss {accuracy_loss:.2f} pts on dev ({DEV_CHOSEN})"
    return (
        f"loss {validation_loss:.2f} pts on validation (chosen on), {accuracy_loss:.2f} on dev "
        "(expected)"
    )
