"""Dev metrics, in points (x100), computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autoprumux.data import Encoded


def task_metrics(
    metric: str, logits: torch.Tensor, gold: Sequence[int], pos_label: int = 1
) -> dict[str, float]:
    """Accuracy, F1 (of the positive class, label `pos_label` (`TaskSpec.positive`), for two
    classes; macro-F1 over the classes in the labels and predictions for more) and Matthews
    correlation, each x100; 'metric' holds the task's primary one."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    pred = logits.argmax(-1).tolist()
    if len(pred) != len(gold) or not len(gold):
        raise ValueError(
            f"need equal, non-empty predictions ({len(pred)}) and labels ({len(gold)})"
        )
    # the task's class count, not the classes seen: a 3-class dev set whose labels and
    # predictions happen to hold only 0 and 1 still gets macro-F1
    binary = logits.shape[-1] == 2
    f1 = (
        f1_score(gold, pred, average="binary", pos_label=pos_label, zero_division=0.0)
        if binary
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
    """Dev metrics of `model` on `items`, in points. A multiplexed model (N > 1) mixes the
    examples of each group of N, so its predictions depend on which examples share a group: its
    metrics are the mean over `pairings` seeded shufflings of the items, taken from a canonical
    order (so the file's order does not matter), with `metric_std` their spread; 0 for N=1,
    whose predictions do not depend on the order. `pos_label`: the class f1 scores as positive
    (two classes)."""
    from autoprumux.training import predict

    gold = [x.label for x in items]
    if getattr(model, "n", 1) == 1:
        logits = predict(model, items, batch_size=batch_size, device=device)
        return {**task_metrics(metric, logits, gold, pos_label), "metric_std": 0.0}
    canonical = sorted(
        range(len(items)), key=lambda i: (items[i].input_ids, items[i].token_type_ids, gold[i])
    )
    runs = []
    for seed in range(pairings):
        g = torch.Generator().manual_seed(seed)
        order = torch.tensor(canonical)[torch.randperm(len(canonical), generator=g)]
        logits = predict(model, [items[i] for i in order], batch_size=batch_size, device=device)
        restored = torch.empty_like(logits)
        restored[order] = logits
        runs.append(task_metrics(metric, restored, gold, pos_label))
    out = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    out["metric_std"] = (
        float(torch.tensor([r["metric"] for r in runs]).std()) if pairings > 1 else 0.0
    )
    return out
