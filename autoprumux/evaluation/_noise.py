"""How far a dev score can be told apart from chance and from another score on the same dev set.

A dev set of n examples scores a model whose true accuracy is p with a binomial standard error
of sqrt(p (1 - p) / n). A difference within `NOISE_STANDARD_ERRORS` of them (about a 95%
interval) is not told apart from no difference: a baseline that close to the majority-class rate
has learnt nothing measurable, and a candidate's loss or gain that small is not reported as one.
For f1 and MCC the accuracy's standard error is the guide, in the metric's points.

A loss (the baseline's metric minus a candidate's, both on the same examples) is a paired
difference: its standard error (`paired_loss_se`) comes from the examples on which the two
disagree, far below either score's own when the candidate predicts as the baseline does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autoprumux.evaluation._accuracy import PairedPredictions

NOISE_STANDARD_ERRORS = 2.0
BOOTSTRAP_RESAMPLES = 200  # f1 and MCC: enough for a standard error within about 5%
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class DevNoise:
    """The dev set's yardsticks for a baseline scoring `accuracy` on it (all in points)."""

    examples: int
    majority: float  # accuracy of always predicting dev's most frequent class
    accuracy: float  # the baseline's dev accuracy the standard error is taken at
    standard_error: float  # sqrt(p (1 - p) / n) at p = the baseline's accuracy
    split: str = "dev"  # or "validation": the split choices are made on (`_selection`)

    @property
    def margin(self) -> float:
        """The largest difference not told apart from noise."""
        return NOISE_STANDARD_ERRORS * self.standard_error

    def within_noise(self, difference: float) -> bool:
        return abs(difference) <= self.margin

    @property
    def near_majority(self) -> bool:
        """The baseline is within noise of (or below) always predicting the majority class."""
        return self.accuracy - self.majority <= self.margin

    def describe(self) -> str:
        """One line: the baseline's accuracy beside the majority rate and the noise."""
        return (
            f"baseline accuracy {self.accuracy:.2f} on {self.examples} {self.split} examples; majority "
            f"class {self.majority:.2f}; noise +-{self.standard_error:.2f} points (1 binomial "
            f"standard error; differences within {self.margin:.2f} are within noise)"
        )

    def warning(self) -> str:
        """What a baseline within noise of the majority class means, and what to do."""
        return (
            f"the baseline's dev accuracy ({self.accuracy:.2f}) is within noise of always "
            f"predicting the majority class ({self.majority:.2f}, +-{self.margin:.2f} points): "
            "it has learnt nothing measurable, so compressing it measures nothing; train it "
            "longer or on more data, give your own fine-tuned model with --model, or use a "
            "larger dev set"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "margin": self.margin, "near_majority": self.near_majority}


def dev_noise(labels: Iterable[int], accuracy: float, split: str = "dev") -> DevNoise:
    """The noise of a `split` (dev, or the validation split) with these `labels` for a baseline
    of `accuracy` (points)."""
    counts = Counter(labels)
    n = sum(counts.values())
    if n == 0:
        raise ValueError(f"the {split} set is empty: no noise to measure")
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return DevNoise(
        examples=n,
        majority=100.0 * max(counts.values()) / n,
        accuracy=float(accuracy),
        standard_error=100.0 * math.sqrt(p * (1.0 - p) / n),
        split=split,
    )


def paired_loss_se(
    metric: str,
    baseline: PairedPredictions,
    candidate: PairedPredictions,
    gold: Sequence[int],
    pos_label: int = 1,
) -> float:
    """The standard error, in points, of the baseline's metric minus the candidate's on the
    examples `gold` labels, both predicted on them (each metric the mean over its pairings).
    Accuracy: exact, from the per-example difference in correctness (averaged over the
    pairings). F1 and MCC: a paired bootstrap (`BOOTSTRAP_RESAMPLES` resamples of the examples,
    seeded, the same resample for both models)."""
    import numpy as np

    n = len(gold)
    if n < 2:
        return 0.0
    y = np.asarray(gold)
    base, cand = np.asarray(baseline.labels), np.asarray(candidate.labels)
    if metric == "accuracy":
        diff = (base == y).mean(0) - (cand == y).mean(0)
        return float(100.0 * diff.std(ddof=1) / math.sqrt(n))
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (BOOTSTRAP_RESAMPLES, n))

    def score(runs: np.ndarray, classes: int) -> np.ndarray:
        # the mean over the pairings of each resample's metric, from its confusion counts
        return np.mean(
            [resampled_metric(metric, y, r, idx, classes, pos_label) for r in runs], axis=0
        )

    diffs = score(base, baseline.classes) - score(cand, candidate.classes)
    return float(np.std(diffs, ddof=1))


def resampled_metric(
    metric: str, gold: Any, pred: Any, idx: Any, classes: int, pos_label: int = 1
) -> Any:
    """f1 or MCC (x100, as `prediction_metrics` scores them: binary f1 of `pos_label` for two
    classes, else macro-F1 over the classes present; 0 where undefined) of every resample of
    the examples, one per row of `idx`, from its confusion counts: one pass for all rows."""
    import numpy as np

    k = max(classes, int(gold.max()) + 1, int(pred.max()) + 1)
    rows = idx.shape[0]
    codes = (gold * k + pred)[idx] + (np.arange(rows) * k * k)[:, None]
    conf = np.bincount(codes.ravel(), minlength=rows * k * k).reshape(rows, k, k)
    true, predicted = conf.sum(2), conf.sum(1)  # per class: gold rows, predicted columns
    tp = np.diagonal(conf, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "mcc":
            s, c = idx.shape[1], tp.sum(1)
            num = c * s - (predicted * true).sum(1)
            den = np.sqrt((s * s - (predicted**2).sum(1)) * (s * s - (true**2).sum(1)))
            return 100.0 * np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), 0.0)
        if classes == 2:
            return 100.0 * f1[:, pos_label]
        present = (true + predicted) > 0
        return 100.0 * (f1 * present).sum(1) / present.sum(1)
