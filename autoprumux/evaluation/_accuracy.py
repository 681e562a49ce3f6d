"""Dev metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    if len(pred) != len(gold) or not gold:
        raise ValueError(
            f"need equal, non-empty predictions ({len(pred)}) and labels ({len(gold)})"
        )
    return sum(int(p == g) for p, g in zip(pred, gold, strict=True)) / len(gold)


def matthews_corrcoef(pred: Sequence[int], gold: Sequence[int]) -> float:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 1)
    tn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 0)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 1)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else (tp * tn - fp * fn) / den


def f1_binary(pred: Sequence[int], gold: Sequence[int]) -> float:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 1)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def task_metrics(metric: str, logits: torch.Tensor, gold: Sequence[int]) -> dict[str, float]:
    """All metrics in points (x100); 'metric' holds the task's primary one."""
    pred = logits.argmax(-1).tolist()
    out = {
        "accuracy": 100 * accuracy(pred, gold),
        "f1": 100 * f1_binary(pred, gold),
        "mcc": 100 * matthews_corrcoef(pred, gold),
    }
    out["metric"] = out[metric]
    return out
