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

from autoprumux.evaluation._accuracy import PairedPredictions, prediction_metrics

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
    rng = np.random.default_rng(BOOTSTRAP_SEED)

    def score(runs: np.ndarray, classes: int, idx: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    prediction_metrics(metric, r[idx], y[idx], classes, pos_label)["metric"]
                    for r in runs
                ]
            )
        )

    diffs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        idx = rng.integers(0, n, n)
        diffs.append(score(base, baseline.classes, idx) - score(cand, candidate.classes, idx))
    return float(np.std(diffs, ddof=1))
