"""The validation split: training examples held out to decide when training stops (and, later,
what is chosen), so the dev set only reports. Carved from train as whole texts (`WholeTexts`:
none of them, nor any phrase of one, is trained on), stratified by label, with a seed of its
own (the recipe's seed varies runs; the split must not)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from autoprumux.data._overlap import Labelled, WholeTexts
from autoprumux.errors import ConfigError

VALIDATION_SEED = 7919  # fixed, apart from the recipe's seed: the split is the same on every run
STOPPING_SEED = 104729  # the stopping split's (carved from the rest), fixed the same way
VALIDATION_SHARE = 0.1  # of the training examples, when the recipe leaves the size unset
MAX_VALIDATION = 2000  # enough to rank checkpoints (a binomial SE below 1.2 points)
MIN_PER_CLASS = 8  # the unset size holds at least this many examples per class
# what else a refused size of each recipe field may be set to
OTHER_SIZES = {
    "validation_examples": "None (10% of train, at most 2,000) or 0 (no validation split)",
    "stopping_examples": "0 (the validation split stops training too) or None (as many as the "
    "validation split, when train can spare them)",
}


def validation_size(
    labels: Sequence[int],
    requested: int | None,
    batch_size: int,
    field: str = "validation_examples",
    seed: int = VALIDATION_SEED,
    optional: bool = False,
) -> tuple[int, str]:
    """(whole texts held out, a line saying how many and why); `labels`: one per whole text
    (`WholeTexts`). `requested` None: `VALIDATION_SHARE` of them, at least `MIN_PER_CLASS` per
    class, at most `MAX_VALIDATION`; or 0 when train is too small to spare them and keep a
    batch. 0: no split. A requested size that leaves less than a batch to train on, or that
    stratification cannot hold, is refused, naming the recipe `field` that asked for it; or,
    when `optional` (a size the recipe left to its default), gives 0 and says why."""
    n, counts = len(labels), Counter(labels)
    if requested == 0:
        return 0, "no validation split (validation_examples 0): the baseline trains its cap"
    if requested is None:
        size = min(MAX_VALIDATION, max(round(VALIDATION_SHARE * n), MIN_PER_CLASS * len(counts)))
        if n - size < batch_size or min(counts.values(), default=0) < 2:
            return 0, (
                f"no validation split: {n} whole training texts are too few to hold out {size} "
                f"and keep a batch of {batch_size}; the baseline trains its cap"
            )
    else:
        size = requested
        rare = min(counts.values(), default=0)
        fits = n - size >= batch_size and size >= len(counts) and rare >= 2
        if not fits and optional:
            return 0, (
                f"none held out for {field}: {n} whole training texts are too few to hold out "
                f"{size} and keep a batch of {batch_size}"
            )
        if not fits:
            raise ConfigError(
                f"recipe field {field} ({requested}) must leave at least a batch "
                f"({batch_size}) of the {n} whole training texts, hold one per class "
                f"({len(counts)}) and find 2 of each (the rarest has {rare}); lower it or set "
                f"{OTHER_SIZES[field]}"
            )
    return size, (
        f"validation: {size:,} of the {n:,} whole training texts held out (stratified, seed "
        f"{seed}), never trained on"
    )


@dataclass(frozen=True)
class ValidationSplit:
    """Indices into the training rows: `trained` (trained on), `held` (the split: whole texts,
    scored), `dropped` (parts of held-out texts: neither), and a line saying so."""

    trained: list[int]
    held: list[int]
    dropped: list[int]
    note: str


def validation_split(
    rows: Sequence[Labelled],
    requested: int | None,
    batch_size: int,
    seed: int = VALIDATION_SEED,
    field: str = "validation_examples",
    optional: bool = False,
) -> ValidationSplit:
    """The validation split of `rows`: `validation_size` of their whole texts (`WholeTexts`:
    no text of the split, nor any part of one, is trained on), stratified by label, the same for
    the same rows, size and seed."""
    texts = WholeTexts(rows)
    size, note = validation_size(
        texts.whole_labels, requested, batch_size, field, seed, optional=optional
    )
    split = texts.hold_out(size, seed)
    if split.dropped:
        note += (
            f"; {len(split.dropped):,} more training examples are parts of the held-out texts "
            "(phrases of them): not trained on either"
        )
    return ValidationSplit(split.trained, split.held, split.dropped, note)
