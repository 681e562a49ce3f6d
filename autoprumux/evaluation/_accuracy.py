"""Dev metrics, in points (x100), computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def task_metrics(metric: str, logits: torch.Tensor, gold: Sequence[int]) -> dict[str, float]:
    """Accuracy, F1 of the positive class (binary tasks; macro-F1 otherwise) and Matthews
    correlation, each x100; 'metric' holds the task's primary one."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    pred = logits.argmax(-1).tolist()
    if len(pred) != len(gold) or not len(gold):
        raise ValueError(
            f"need equal, non-empty predictions ({len(pred)}) and labels ({len(gold)})"
        )
    binary = set(gold) | set(pred) <= {0, 1}
    out = {
        "accuracy": 100 * float(accuracy_score(gold, pred)),
        "f1": 100
        * float(f1_score(gold, pred, average="binary" if binary else "macro", zero_division=0.0)),
        # scikit-learn answers 0 for a degenerate (constant) prediction or label set
        "mcc": 100 * float(matthews_corrcoef(gold, pred)),
    }
    out["metric"] = out[metric]
    return out
