"""The validation split: training examples held out to decide when training stops (and, later,
what is chosen), so the dev set only reports. Carved from train, stratified by label, with a
seed of its own (the recipe's seed varies runs; the split must not), and never trained on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from autoprumux.errors import ConfigError

VALIDATION_SEED = 7919  # fixed, apart from the recipe's seed: the split is the same on every run
VALIDATION_SHARE = 0.1  # of the training examples, when the recipe leaves the size unset
MAX_VALIDATION = 2000  # enough to rank checkpoints (a binomial SE below 1.2 points)
MIN_PER_CLASS = 8  # the unset size holds at least this many examples per class


def validation_size(
    labels: Sequence[int], requested: int | None, batch_size: int
) -> tuple[int, str]:
    """(examples held out, a line saying how many and why). `requested` None: `VALIDATION_SHARE`
    of train, at least `MIN_PER_CLASS` per class, at most `MAX_VALIDATION`; or 0 when train is
    too small to spare them and keep a batch. 0: no split. A requested size that leaves less
    than a batch to train on, or that stratification cannot hold, is refused."""
    n, counts = len(labels), Counter(labels)
    if requested == 0:
        return 0, "no validation split (validation_examples 0): the baseline trains its cap"
    if requested is None:
        size = min(MAX_VALIDATION, max(round(VALIDATION_SHARE * n), MIN_PER_CLASS * len(counts)))
        if n - size < batch_size or min(counts.values(), default=0) < 2:
            return 0, (
                f"no validation split: {n} training examples are too few to hold out {size} "
                f"and keep a batch of {batch_size}; the baseline trains its cap"
            )
    else:
        size = requested
        rare = min(counts.values(), default=0)
        if n - size < batch_size or size < len(counts) or rare < 2:
            raise ConfigError(
                f"recipe field validation_examples ({requested}) must leave at least a batch "
                f"({batch_size}) of the {n} training examples, hold one per class "
                f"({len(counts)}) and find 2 of each (the rarest has {rare}); lower it, set "
                "None (10% of train, at most 2,000) or 0 (no validation split)"
            )
    return size, (
        f"validation: {size} of the {n} training examples held out (stratified, seed "
        f"{VALIDATION_SEED}), never trained on"
    )


def validation_split(
    labels: Sequence[int], size: int, seed: int = VALIDATION_SEED
) -> tuple[list[int], list[int]]:
    """(indices trained on, indices held out): `size` of them, stratified by label, both in the
    examples' order; the same for the same labels, size and seed."""
    everything = list(range(len(labels)))
    if size == 0:
        return everything, []
    from sklearn.model_selection import train_test_split

    kept, held = train_test_split(
        everything, test_size=size, stratify=list(labels), random_state=seed
    )
    return sorted(kept), sorted(held)
