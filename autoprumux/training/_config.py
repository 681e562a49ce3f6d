"""The training configuration and the optimiser set-up every trainer shares (AdamW groups and the
LR schedule)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from autoprumux._cpu import has_bf16_matmul
from autoprumux.config import (
    BATCHINGS,
    L2L_CLIP_MODES,
    LOGIT_LOSSES,
    TRAIN_AUTOCASTS,
    Recipe,
    validate_trainer,
)
from autoprumux.errors import ConfigError


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
    # weight of layer-wise distillation (N=1 models, the standard trainer): each encoder layer's
    # token states against the teacher layer it maps to (`layer_map`)
    layer_distill_weight: float = 0.0
    # "standard": one forward/backward over the whole batch, model on the device; "l2l": the
    # layer-to-layer relay (`L2LExecutor`): the model lives in host memory, the device holds one
    # stage at a time, the batch runs as `micro_batches` micro-batches (equal to gradient
    # accumulation over them), boundary activations stashed on the "device" or the "host"
    trainer: str = "standard"
    micro_batches: int = 1
    stash: str = "device"
    # L2L only, with grad_clip > 0: "global" clips the global norm exactly like the standard
    # loop (the host optimizer steps then wait for the whole backward); "stage" clips each
    # stage's gradient to grad_clip on its own; "previous" scales every gradient by
    # grad_clip / (the previous step's global norm) when that norm is over grad_clip (the first
    # step clips exactly). With "stage" and "previous" each stage's step overlaps the backward
    # below it
    l2l_clip: str = "global"
    # the loss of regression distillation (`train_classifier(logit_targets=...)`, the
    # students): "mse" between (offsets + logits) and the targets, or "kl": KL(softmax(targets /
    # temperature) || softmax((offsets + logits) / temperature)) * temperature^2
    logit_loss: str = "mse"
    # "random" or "grouped" (length-sorted pools, see `infinite_batches`)
    batching: str = "random"
    # the standard loop's forward and loss: "bf16" under bf16 autocast, "fp32" without, "auto"
    # bf16 where the device multiplies bf16 natively (`resolve_autocast`)
    autocast: str = "fp32"

    @classmethod
    def from_recipe(cls, r: Recipe, steps: int, **kw: Any) -> TrainConfig:
        """`steps` of a recipe's task training (its batch, trainer; its `lr` and `seed` unless
        given)."""
        kw.setdefault("lr", r.lr)
        kw.setdefault("seed", r.seed)
        return cls(
            steps=steps,
            batch_size=r.batch_size,
            trainer=r.trainer,
            micro_batches=r.l2l_micro_batches,
            stash=r.l2l_stash,
            batching=r.batching,
            autocast=r.train_autocast,
            **kw,
        )

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
        if not (self.layer_distill_weight >= 0.0 and math.isfinite(self.layer_distill_weight)):
            raise ConfigError(
                f"layer_distill_weight ({self.layer_distill_weight}) must be a number >= 0"
            )
        validate_trainer(self.trainer, self.micro_batches, self.stash, self.batch_size)
        if self.layer_distill_weight > 0 and self.trainer != "standard":
            raise ConfigError(
                "layer_distill_weight > 0 needs the standard trainer (the L2L executor keeps "
                "one layer at a time); set it to 0 or use trainer='standard'"
            )
        if self.logit_loss not in LOGIT_LOSSES:
            raise ConfigError(
                f"logit_loss ({self.logit_loss!r}) must be one of {list(LOGIT_LOSSES)}"
            )
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature ({self.temperature!r}) must be a number > 0")
        if self.batching not in BATCHINGS:
            raise ConfigError(f"batching ({self.batching!r}) must be one of {list(BATCHINGS)}")
        if self.autocast not in TRAIN_AUTOCASTS:
            raise ConfigError(
                f"autocast ({self.autocast!r}) must be one of {list(TRAIN_AUTOCASTS)}"
            )
        if self.l2l_clip not in L2L_CLIP_MODES:
            raise ConfigError(
                f"l2l_clip ({self.l2l_clip!r}) must be one of {list(L2L_CLIP_MODES)}; 'global' "
                "clips exactly like the standard loop, 'stage' clips each stage on its own, "
                "'previous' with the previous step's global norm"
            )


def resolve_autocast(choice: str, device: str | torch.device, trainer: str = "standard") -> str:
    """ "fp32" or "bf16": `choice` as the standard loop runs it on `device`. "auto" is bf16 on a
    CPU with bf16 matrix instructions (avx512_bf16 / AMX) or a CUDA device that supports bf16,
    else fp32 (emulated bf16 is slower than fp32). The L2L trainers always run fp32."""
    if trainer != "standard":
        return "fp32"
    if choice != "auto":
        return choice
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if kind == "cpu" and has_bf16_matmul() else "fp32"


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]],
    cfg: TrainConfig,
    lr_of: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no weight decay for biases and LayerNorms; a
    parameter named in `lr_of` trains at that rate instead of `cfg.lr`."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {
        (True, cfg.lr): [],
        (False, cfg.lr): [],
    }
    lr_of = lr_of or {}
    for name, p in named:
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or "norm" in name)
        groups.setdefault((decays, lr_of.get(name, cfg.lr)), []).append(p)
    return [
        {"params": params, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": lr}
        for (decays, lr), params in groups.items()
    ]


def lr_schedule(cfg: TrainConfig) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over `warmup_ratio` of the steps, then linear decay."""
    warm = max(1, int(cfg.warmup_ratio * cfg.steps))

    def sched(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return sched


class AnnealOnPlateau:
    """The LR multiplier of a run trained to a plateau: `lr_schedule(cfg)` until `begin(step,
    length)`, then linear from that step's multiplier to 0 over `length` steps. A plateau at a
    still-high LR is the noise of large steps; annealing from it settles into the minimum that a
    schedule decaying over the whole run would have reached, without knowing that length."""

    def __init__(self, cfg: TrainConfig):
        self.base = lr_schedule(cfg)
        self.start: int | None = None
        self.length = 0
        self.scale = 1.0

    def begin(self, step: int, length: int) -> None:
        self.start, self.length, self.scale = step, max(1, length), self.base(step)

    @property
    def end(self) -> int | None:
        """The step at which the annealed LR reaches 0 (None: not annealing)."""
        return None if self.start is None else self.start + self.length

    def __call__(self, step: int) -> float:
        if self.start is None:
            return self.base(step)
        return self.scale * max(0.0, 1.0 - (step - self.start) / self.length)


def make_optimizer(
    model: torch.nn.Module,
    cfg: TrainConfig,
    lr_of: Mapping[str, float] | None = None,
    schedule: Callable[[int], float] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `param_groups` (`lr_of`: per-parameter rates) with `schedule` (default
    `lr_schedule(cfg)`)."""
    opt = torch.optim.AdamW(param_groups(model.named_parameters(), cfg, lr_of), lr=cfg.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule or lr_schedule(cfg))


def optimizer_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    loss: torch.Tensor,
    cfg: TrainConfig,
) -> None:
    """One step of the standard loops: backward, global-norm clipping at `cfg.grad_clip`
    (0: none), the optimizer and the schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    sched.step()
