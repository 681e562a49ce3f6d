"""The training losses: task loss with distillation, token retrieval, hidden-state distillation.

`classifier_loss` is shared by the standard loop and the L2L executor."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from autoprumux.data import UNLABELED
from autoprumux.models import MuxSequenceClassifier
from autoprumux.training._config import TrainConfig


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) at temperature t, scaled by t^2 (Hinton et al.)."""
    return (
        F.kl_div(
            F.log_softmax(student / t, -1),
            F.log_softmax(teacher / t, -1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


def logit_fit_loss(out: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """`cfg.logit_loss` between logits `out` and `targets` of the same shape (..., labels): MSE,
    or `kd_loss` at `cfg.temperature` averaged over every leading row."""
    if cfg.logit_loss == "kl":
        c = out.shape[-1]
        return kd_loss(out.reshape(-1, c), targets.reshape(-1, c), cfg.temperature)
    return F.mse_loss(out, targets)


def hidden_distill_loss(
    states: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over real token positions, relative to the target's mean square."""
    m = attention_mask.to(states.dtype).unsqueeze(-1)
    denom = m.sum().clamp_min(1.0) * states.shape[-1]
    mse = ((states - target) ** 2 * m).sum() / denom
    scale = ((target**2) * m).sum().detach() / denom
    return mse / scale.clamp_min(1e-6)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer learns from: spread evenly, the last to the last
    (the identity when no layer was removed)."""
    return [
        max(0, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)
    ]


def layer_distill_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over the student's layers of `hidden_distill_loss` against the mapped teacher layer."""
    pairs = zip(layer_map(len(student), len(teacher)), student, strict=True)
    losses = [hidden_distill_loss(s, teacher[j], attention_mask) for j, s in pairs]
    return torch.stack(losses).mean()


def retrieval_loss(
    model: MuxSequenceClassifier,
    batch: dict[str, torch.Tensor],
    *,
    special_ids: Sequence[int] = (),
    positions: int = 16,
    generator: torch.Generator | None = None,
    states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Token retrieval (DataMUX): each instance's demuxed states predict its own tokens.

    Up to `positions` real, non-special token positions per instance are sampled (the vocabulary
    projection is the expensive part). Returns (loss, accuracy).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if states is None:
        states = model.hidden_states(
            ids, mask, batch.get("token_type_ids"), positions="all"
        )  # (B, L, H)
    valid = mask.bool()
    for s in special_ids:
        valid &= ids != s
    scores = torch.rand(ids.shape, generator=generator).to(ids.device)
    scores = scores.masked_fill(~valid, -1.0)
    k = min(positions, ids.shape[1])
    top = scores.topk(k, dim=1)
    pick = top.indices[top.values >= 0]  # flattened positions
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand(-1, k)[top.values >= 0]
    if pick.numel() == 0:
        zero = states.sum() * 0.0
        return zero, 0.0
    logits = model.retrieval_logits(states[rows, pick])  # (P, V)
    target = ids[rows, pick]
    loss = F.cross_entropy(logits, target)
    acc = float((logits.argmax(-1) == target).float().mean())
    return loss, acc


def task_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled rows (an UNLABELED row adds only the distillation
    terms); 0 for a batch without any."""
    known = labels != UNLABELED
    if bool(known.all()):
        return F.cross_entropy(logits, labels)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known])


def classifier_loss(
    model: MuxSequenceClassifier,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    *,
    logits: torch.Tensor,
    states: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    teacher_states: torch.Tensor | None,
    special_ids: Sequence[int],
    generator: torch.Generator,
    layers: Sequence[torch.Tensor] = (),
    teacher_layers: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """The loss `train_classifier` minimises, from the model's outputs on `batch`.

    logits (B, labels); states (B, L, H) per-instance token states, needed by the retrieval and
    hidden-distillation terms; teacher_logits / teacher_states the teacher's (no grad), or None;
    layers / teacher_layers each encoder layer's states, for the layer-distillation term.
    Shared by the standard loop and the L2L executor (which calls it once per micro-batch).
    A batch carrying "logit_targets" (see `train_classifier(logit_targets=...)`) is trained on
    those targets alone: `cfg.logit_loss` between (its "logit_offsets", if any, + the logits)
    and the targets.
    """
    if "logit_targets" in batch:  # regression distillation (students)
        out = logits + batch["logit_offsets"] if "logit_offsets" in batch else logits
        return logit_fit_loss(out, batch["logit_targets"], cfg)
    loss = task_cross_entropy(logits, batch["labels"])
    if teacher_logits is not None:
        loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd_loss(
            logits, teacher_logits, cfg.temperature
        )
    if cfg.retrieval_weight > 0 and model.n > 1:
        r_loss, _ = retrieval_loss(
            model,
            batch,
            special_ids=special_ids,
            positions=cfg.retrieval_positions,
            generator=generator,
            states=states,
        )
        loss = (1 - cfg.retrieval_weight) * loss + cfg.retrieval_weight * r_loss
    if cfg.hidden_distill_weight > 0:
        assert states is not None and teacher_states is not None
        loss = loss + cfg.hidden_distill_weight * hidden_distill_loss(
            states, teacher_states, batch["attention_mask"]
        )
    if cfg.layer_distill_weight > 0:
        loss = loss + cfg.layer_distill_weight * layer_distill_loss(
            layers, teacher_layers, batch["attention_mask"]
        )
    return loss


def target_batches(
    it: Iterator[dict[str, torch.Tensor]],
    logit_targets: torch.Tensor | None,
    logit_offsets: torch.Tensor | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches with "logit_targets" (and "logit_offsets") added: the labels are row indices
    into those tables."""
    for batch in it:
        if logit_targets is not None:
            batch["logit_targets"] = logit_targets[batch["labels"]]
            if logit_offsets is not None:
                batch["logit_offsets"] = logit_offsets[batch["labels"]]
        yield batch
