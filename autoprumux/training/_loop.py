"""The standard training loop: task fine-tuning, distillation, and the mux retrieval objective."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from autoprumux.config import L2L_CLIP_MODES, validate_trainer
from autoprumux.data import Encoded, collate, infinite_batches
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32  # examples per step (a mux model sees batch_size / N mixed rows)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    seed: int = 0
    distill_weight: float = 0.0  # weight of the KL term against the teacher (the rest is CE)
    temperature: float = 2.0
    retrieval_weight: float = 0.0  # mux models: weight of the token-retrieval term
    retrieval_positions: int = 16  # sampled token positions per instance for retrieval
    # weight of hidden-state distillation: each instance's (demuxed) token states against the
    # teacher's states for that instance (added to the loss; needs a teacher)
    hidden_distill_weight: float = 0.0
    # "standard": one forward/backward over the whole batch, model on the device; "l2l": the
    # layer-to-layer relay (`L2LExecutor`): the model lives in host memory, the device holds one
    # stage at a time, the batch runs as `micro_batches` micro-batches (equal to gradient
    # accumulation over them), boundary activations stashed on the "device" or the "host"
    trainer: str = "standard"
    micro_batches: int = 1
    stash: str = "device"
    # L2L only, with grad_clip > 0: "global" clips the global norm exactly like the standard
    # loop (the host optimizer steps then wait for the whole backward); "stage" clips each
    # stage's gradient to grad_clip on its own, so its step overlaps the backward below it
    l2l_clip: str = "global"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps ({self.steps}) must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"batch size ({self.batch_size}) must be a positive integer")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight ({self.distill_weight}) must be in [0, 1]")
        if not 0.0 <= self.retrieval_weight <= 1.0:
            raise ConfigError(f"retrieval_weight ({self.retrieval_weight}) must be in [0, 1]")
        if not (self.hidden_distill_weight >= 0.0 and math.isfinite(self.hidden_distill_weight)):
            raise ConfigError(
                f"hidden_distill_weight ({self.hidden_distill_weight}) must be a number >= 0"
            )
        validate_trainer(self.trainer, self.micro_batches, self.stash, self.batch_size)
        if self.l2l_clip not in L2L_CLIP_MODES:
            raise ConfigError(
                f"l2l_clip ({self.l2l_clip!r}) must be one of {list(L2L_CLIP_MODES)}; 'global' "
                "clips exactly like the standard loop, 'stage' clips each stage on its own"
            )


def _progress_enabled() -> bool:
    return os.environ.get("AUTOPRUMUX_PROGRESS", "1") != "0"


class LossMeter:
    """Moving average of a training loss shown on the progress bar; a non-finite loss stops
    training with a message naming the learning rate."""

    def __init__(self, bar: tqdm, lr: float, label: str = "loss"):
        self.bar, self.lr, self.label = bar, lr, label
        self.value: float | None = None

    def update(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training {self.label} became {loss}; lower the learning rate ({self.lr})"
            )
        self.value = loss if self.value is None else 0.95 * self.value + 0.05 * loss
        self.bar.set_postfix({self.label: f"{self.value:.4g}"})

    @property
    def final(self) -> float:
        return float(self.value or 0.0)


def progress(steps: int, desc: str) -> tqdm:
    """A transient progress bar over training steps (off with AUTOPRUMUX_PROGRESS=0)."""
    return tqdm(
        range(steps), desc=desc, disable=not _progress_enabled(), leave=False, dynamic_ncols=True
    )


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], cfg: TrainConfig
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no weight decay for biases and LayerNorms."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in named:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_schedule(cfg: TrainConfig) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over `warmup_ratio` of the steps, then linear decay."""
    warm = max(1, int(cfg.warmup_ratio * cfg.steps))

    def sched(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return sched


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW(param_groups(model.named_parameters(), cfg), lr=cfg.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg))


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


def hidden_distill_loss(
    states: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over real token positions, relative to the target's mean square."""
    m = attention_mask.to(states.dtype).unsqueeze(-1)
    denom = m.sum().clamp_min(1.0) * states.shape[-1]
    mse = ((states - target) ** 2 * m).sum() / denom
    scale = ((target**2) * m).sum().detach() / denom
    return mse / scale.clamp_min(1e-6)


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
) -> torch.Tensor:
    """The loss `train_classifier` minimises, from the model's outputs on `batch`.

    logits (B, labels); states (B, L, H) per-instance token states, needed by the retrieval and
    hidden-distillation terms; teacher_logits / teacher_states the teacher's (no grad), or None.
    Shared by the standard loop and the L2L executor (which calls it once per micro-batch).
    A batch carrying "logit_targets" (see `train_classifier(logit_targets=...)`) is trained by
    MSE between the logits and those targets alone.
    """
    if "logit_targets" in batch:  # regression distillation (students): MSE on given logits
        return F.mse_loss(logits, batch["logit_targets"])
    loss = F.cross_entropy(logits, batch["labels"])
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
    return loss


def target_batches(
    it: Iterator[dict[str, torch.Tensor]], logit_targets: torch.Tensor | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches with "logit_targets" added (the labels are row indices into `logit_targets`)."""
    for batch in it:
        if logit_targets is not None:
            batch["logit_targets"] = logit_targets[batch["labels"]]
        yield batch


def train_classifier(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    teacher: MuxSequenceClassifier | None = None,
    special_ids: Sequence[int] = (),
    desc: str = "fine-tune",
    device: str | torch.device = "cpu",
    logit_targets: torch.Tensor | None = None,
) -> dict[str, float]:
    """Fine-tune `model` on the task for `cfg.steps` steps.

    loss = (1 - w_r) * [(1 - w_d) * CE + w_d * KD(teacher)] + w_r * retrieval
           + w_h * hidden-state distillation(teacher). Returns summary stats.
    With ``cfg.trainer == "l2l"`` the same loss is trained by the layer-to-layer executor
    (`L2LExecutor`: model in host memory, `cfg.micro_batches` micro-batches per step; the model
    ends in host memory and the stats add ``peak_device_bytes``).
    With `logit_targets` (M, labels), the items' labels are row indices into it and the loss is
    the MSE between the logits and those rows (regression distillation of the students).
    """
    if cfg.steps == 0:
        return {"steps": 0.0, "seconds": 0.0}
    if (cfg.distill_weight > 0 or cfg.hidden_distill_weight > 0) and teacher is None:
        raise ConfigError("distill_weight / hidden_distill_weight > 0 need a teacher model")
    if cfg.trainer == "l2l":
        # imported here: the L2L module builds on this one
        from autoprumux.training._l2l import train_classifier_l2l

        return train_classifier_l2l(
            model,
            train,
            cfg,
            teacher=teacher,
            special_ids=special_ids,
            desc=desc,
            device=device,
            logit_targets=logit_targets,
        )
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt, sched = make_optimizer(model, cfg)
    use_retrieval = cfg.retrieval_weight > 0 and model.n > 1
    use_hidden = cfg.hidden_distill_weight > 0
    it = target_batches(infinite_batches(train, cfg.batch_size, seed=cfg.seed), logit_targets)
    t0 = time.perf_counter()
    bar = progress(cfg.steps, desc)
    meter = LossMeter(bar, cfg.lr)
    for _ in bar:
        batch = {k: v.to(device) for k, v in next(it).items()}
        ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        if use_retrieval or use_hidden:
            states = model.hidden_states(ids, mask, tt, positions="all")
            logits = model.logits_from_states(states, mask)
        else:
            states = None
            logits = model(ids, mask, tt)
        t_logits = t_states = None
        if teacher is not None and (cfg.distill_weight > 0 or use_hidden):
            with torch.no_grad():
                if use_hidden:
                    t_states = teacher.hidden_states(ids, mask, tt, positions="all")
                    t_logits = teacher.logits_from_states(t_states, mask)
                else:
                    t_logits = teacher(ids, mask, tt)
        loss = classifier_loss(
            model,
            batch,
            cfg,
            logits=logits,
            states=states,
            teacher_logits=t_logits,
            teacher_states=t_states,
            special_ids=special_ids,
            generator=gen,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        meter.update(float(loss.detach()))
    bar.close()
    model.eval()
    return {
        "steps": float(cfg.steps),
        "seconds": time.perf_counter() - t0,
        "final_loss": meter.final,
    }


@torch.no_grad()
def predict(
    model: torch.nn.Module,  # MuxSequenceClassifier or StudentEnsemble
    items: Sequence[Encoded],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits for every item, in order (dummy rows for N are handled by the model)."""
    model.to(device).eval()
    out = []
    for s in range(0, len(items), batch_size):
        b = collate(items[s : s + batch_size])
        out.append(
            model(
                b["input_ids"].to(device),
                b["attention_mask"].to(device),
                b["token_type_ids"].to(device),
            )
            .float()
            .cpu()
        )
    return torch.cat(out) if out else torch.zeros((0, int(getattr(model, "num_labels", 0))))
