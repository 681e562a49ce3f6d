"""Dev metrics, in points (x100), computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from autoprumux.data import Encoded


class PairedPredictions(NamedTuple):
    """A model's predicted labels for a list of items, one list per seeded pairing (one for a
    model whose predictions do not depend on which items share a group), in the items' order,
    and the task's class count."""

    labels: list[list[int]]
    classes: int


def prediction_metrics(
    metric: str, pred: Sequence[int], gold: Sequence[int], classes: int, pos_label: int = 1
) -> dict[str, float]:
    """Accuracy, F1 (of the positive class, label `pos_label` (`TaskSpec.positive`), for two
    classes; macro-F1 over the classes in the labels and predictions for more) and Matthews
    correlation of predicted labels, each x100; 'metric' holds the task's primary one."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if len(pred) != len(gold) or not len(gold):
        raise ValueError(
            f"need equal, non-empty predictions ({len(pred)}) and labels ({len(gold)})"
        )
    # the task's class count, not the classes seen: a 3-class dev set whose labels and
    # predictions happen to hold only 0 and 1 still gets macro-F1
    f1 = (
        f1_score(gold, pred, average="binary", pos_label=pos_label, zero_division=0.0)
        if classes == 2
        else f1_score(gold, pred, average="macro", zero_division=0.0)
    )
    out = {
        "accuracy": 100 * float(accuracy_score(gold, pred)),
        "f1": 100 * float(f1),
        # scikit-learn answers 0 for a degenerate (constant) prediction or label set
        "mcc": 100 * float(matthews_corrcoef(gold, pred)),
    }
    out["metric"] = out[metric]
    return out


def task_metrics(
    metric: str, logits: torch.Tensor, gold: Sequence[int], pos_label: int = 1
) -> dict[str, float]:
    """`prediction_metrics` of the labels `logits` predict."""
    return prediction_metrics(
        metric, logits.argmax(-1).tolist(), gold, int(logits.shape[-1]), pos_label
    )


def paired_predictions(
    model: torch.nn.Module,
    items: Sequence[Encoded],
    *,
    pairings: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> PairedPredictions:
    """`model`'s predicted labels for `items`. A multiplexed model (N > 1) mixes the examples of
    each group of N, so its predictions depend on which examples share a group: it predicts
    under `pairings` seeded shufflings of the items, taken from a canonical order (so the file's
    order does not matter), each restored to the items' order; once for N=1."""
    from autoprumux.training import predict

    if getattr(model, "n", 1) == 1:
        logits = predict(model, items, batch_size=batch_size, device=device)
        return PairedPredictions([logits.argmax(-1).tolist()], int(logits.shape[-1]))
    canonical = sorted(
        range(len(items)),
        key=lambda i: (items[i].input_ids, items[i].token_type_ids, items[i].label),
    )
    runs, classes = [], 0
    for seed in range(pairings):
        g = torch.Generator().manual_seed(seed)
        order = torch.tensor(canonical)[torch.randperm(len(canonical), generator=g)]
        logits = predict(model, [items[i] for i in order], batch_size=batch_size, device=device)
        restored = torch.empty_like(logits)
        restored[order] = logits
        runs.append(restored.argmax(-1).tolist())
        classes = int(logits.shape[-1])
    return PairedPredictions(runs, classes)


def paired_metrics(
    metric: str, predicted: PairedPredictions, gold: Sequence[int], pos_label: int = 1
) -> dict[str, float]:
    """The metrics (`prediction_metrics`) of paired predictions: the mean over the pairings,
    with `metric_std` their spread (0 for a single pairing)."""
    runs = [
        prediction_metrics(metric, p, gold, predicted.classes, pos_label) for p in predicted.labels
    ]
    out = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    out["metric_std"] = (
        float(torch.tensor([r["metric"] for r in runs]).std()) if len(runs) > 1 else 0.0
    )
    return out


def paired_dev_metrics(
    model: torch.nn.Module,
    items: Sequence[Encoded],
    metric: str,
    *,
    pairings: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    pos_label: int = 1,
) -> dict[str, float]:
    """Dev metrics of `model` on `items`, in points (`paired_metrics` of `paired_predictions`:
    a multiplexed model's are the mean over `pairings` seeded pairings, `metric_std` their
    spread). `pos_label`: the class f1 scores as positive (two classes)."""
    predicted = paired_predictions(
        model, items, pairings=pairings, device=device, batch_size=batch_size
    )
    return paired_metrics(metric, predicted, [x.label for x in items], pos_label)
