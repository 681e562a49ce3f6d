"""The standard training loop: task fine-tuning, distillation, and the mux retrieval objective."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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


def _progress_enabled() -> bool:
    return os.environ.get("AUTOPRUMUX_PROGRESS", "1") != "0"


def progress(steps: int, desc: str) -> tqdm:
    """A transient progress bar over training steps (off with AUTOPRUMUX_PROGRESS=0)."""
    return tqdm(
        range(steps), desc=desc, disable=not _progress_enabled(), leave=False, dynamic_ncols=True
    )


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    warm = max(1, int(cfg.warmup_ratio * cfg.steps))

    def sched(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, sched)


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


def train_classifier(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    teacher: MuxSequenceClassifier | None = None,
    special_ids: Sequence[int] = (),
    desc: str = "fine-tune",
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Fine-tune `model` on the task for `cfg.steps` steps.

    loss = (1 - w_r) * [(1 - w_d) * CE + w_d * KD(teacher)] + w_r * retrieval
           + w_h * hidden-state distillation(teacher). Returns summary stats.
    """
    if cfg.steps == 0:
        return {"steps": 0.0, "seconds": 0.0}
    if (cfg.distill_weight > 0 or cfg.hidden_distill_weight > 0) and teacher is None:
        raise ConfigError("distill_weight / hidden_distill_weight > 0 need a teacher model")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt, sched = make_optimizer(model, cfg)
    use_retrieval = cfg.retrieval_weight > 0 and model.n > 1
    use_hidden = cfg.hidden_distill_weight > 0
    it = infinite_batches(train, cfg.batch_size, seed=cfg.seed)
    t0 = time.perf_counter()
    ema = None
    bar = progress(cfg.steps, desc)
    for _ in bar:
        batch = {k: v.to(device) for k, v in next(it).items()}
        ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        if use_retrieval or use_hidden:
            states = model.hidden_states(ids, mask, tt, positions="all")
            logits = model.logits_from_states(states, mask)
        else:
            states = None
            logits = model(ids, mask, tt)
        loss = F.cross_entropy(logits, batch["labels"])
        t_states = None
        if teacher is not None and (cfg.distill_weight > 0 or use_hidden):
            with torch.no_grad():
                if use_hidden:
                    t_states = teacher.hidden_states(ids, mask, tt, positions="all")
                    t_logits = teacher.logits_from_states(t_states, mask)
                else:
                    t_logits = teacher(ids, mask, tt)
            loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd_loss(
                logits, t_logits, cfg.temperature
            )
        if use_retrieval:
            r_loss, _ = retrieval_loss(
                model,
                batch,
                special_ids=special_ids,
                positions=cfg.retrieval_positions,
                generator=gen,
                states=states,
            )
            loss = (1 - cfg.retrieval_weight) * loss + cfg.retrieval_weight * r_loss
        if use_hidden:
            assert states is not None and t_states is not None
            loss = loss + cfg.hidden_distill_weight * hidden_distill_loss(states, t_states, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise FloatingPointError(
                f"training loss became {lv}; lower the learning rate ({cfg.lr})"
            )
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        bar.set_postfix(loss=f"{ema:.3f}")
    bar.close()
    model.eval()
    return {
        "steps": float(cfg.steps),
        "seconds": time.perf_counter() - t0,
        "final_loss": float(ema or 0.0),
    }


@torch.no_grad()
def predict(
    model: MuxSequenceClassifier,
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
    return torch.cat(out) if out else torch.zeros((0, model.num_labels))
