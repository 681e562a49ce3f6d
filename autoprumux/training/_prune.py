"""Structured pruning in stages, each followed by recovery fine-tuning with distillation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from autoprumux.config import RECOVERY_SCHEDULES
from autoprumux.data import Encoded, collate
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier, apply_plan, compute_importance, search_plan
from autoprumux.training._config import TrainConfig
from autoprumux.training._loop import train_classifier
from autoprumux.training._stopping import StoppingRule
from autoprumux.training._teacher import TeacherLayers

# examples per stage whose loss change ranks whole sub-layers (attention, FFN) for removal
ABLATION_EXAMPLES = 128


def recovery_schedule(total: int, stages: int, schedule: str) -> list[int]:
    """The recovery steps after each of `stages` pruning stages, `total` in all: "even" splits
    them equally, "rising" in proportion to the stage's number (stage i of S gets i / (1 + ... +
    S)): a later stage removes structure from a smaller model, and costs more accuracy. The
    rounding remainder goes to the last stage."""
    if schedule not in RECOVERY_SCHEDULES:
        raise ConfigError(
            f"recovery schedule ({schedule!r}) must be one of {list(RECOVERY_SCHEDULES)}"
        )
    weights = [1] * stages if schedule == "even" else list(range(1, stages + 1))
    steps = [total * w // sum(weights) for w in weights]
    steps[-1] += total - sum(steps)
    return steps


def prune_to(
    model: MuxSequenceClassifier,
    target: float,
    train_items: Sequence[Encoded],
    order: Sequence[int],
    importance_examples: int,
    device: torch.device | str,
    plan_cost: str,
    max_sublayers: int | None = None,
) -> None:
    """Remove `model`'s least important heads, FFN units and sub-layers in place until its
    counted sparsity reaches `target` (nothing when it already has): the first
    `importance_examples` items of `order` (indices into `train_items`) score heads and units by
    Fisher importance, in batches of N so a multiplexed model is scored as it runs, the next
    `ABLATION_EXAMPLES` score whole sub-layers by the loss change of removing them; the plan
    weighs each estimated loss against the parameters or time its removal saves (`plan_cost`,
    see `search_plan`), removing at most `max_sublayers` whole sub-layers (None: no limit)."""
    n = model.n
    fisher_items = [train_items[i] for i in order[:importance_examples]]
    fisher_batches = [
        collate(fisher_items[s : s + n]) for s in range(0, len(fisher_items) - n + 1, n)
    ]
    ablation = order[importance_examples : importance_examples + ABLATION_EXAMPLES]
    # length-sorted: each batch padded only to its own longest item (the mean loss is the same)
    abl_items = sorted((train_items[i] for i in ablation), key=lambda x: len(x.input_ids))
    abl_batches = [collate(abl_items[s : s + 32]) for s in range(0, len(abl_items), 32)]

    def loss_fn(b: dict[str, torch.Tensor]) -> torch.Tensor:
        b = {k: v.to(device) for k, v in b.items()}
        return F.cross_entropy(
            model(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"]
        )

    model.to(device)
    imp = compute_importance(model.encoder, loss_fn, fisher_batches, abl_batches)
    plan = search_plan(
        model.encoder, imp, target, model.original_prunable_params, plan_cost, max_sublayers
    )
    apply_plan(model.encoder, plan)


def prune_in_stages(
    model: MuxSequenceClassifier,
    sparsity: float,
    train_items: Sequence[Encoded],
    *,
    teacher: MuxSequenceClassifier,
    stages: int,
    recovery_steps: int,
    schedule: str = "even",
    importance_examples: int,
    plan_cost: str,
    seed: int,
    train_cfg: Callable[[int], TrainConfig],
    score: Callable[[MuxSequenceClassifier], dict[str, Any]],
    special_ids: tuple[int, ...],
    device: torch.device | str,
    desc: str = "",
    on_stage: Callable[[int, dict[str, Any]], None] | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_layers: TeacherLayers | None = None,
    recovery_items: Sequence[Encoded] | None = None,
    stopping: StoppingRule | None = None,
) -> dict:
    """Prune `model` in place to `sparsity` in `stages` equal steps. Each stage ranks heads and
    FFN units by Fisher importance on `importance_examples` training examples (batches of N, so a
    multiplexed model is scored as it runs) and sub-layers by the loss change of removing them,
    removes the least important down to the stage's target, then recovers with
    `train_cfg(steps)` (the recovery steps split over the stages by `schedule`, see
    `recovery_schedule`) distilling from `teacher`.
    Each stage's `score(model)` (its metrics) is recorded in its stats, which are passed to
    `on_stage(stage, stats)`; it may raise to abandon the candidate. `teacher_logits` (the teacher's logits for every
    training item), and `teacher_layers` (its per-layer states) for layer distillation, spare
    running the teacher (see `train_classifier`). The recovery trains on `recovery_items` when
    given (e.g. the training items plus unlabeled ones, which the tables then cover too), the
    importance is always scored on `train_items`. With `stopping`, each stage's recovery stops on
    the validation split's plateau, its step count the cap, and keeps its best weights (the
    stage's stats add ``stopping``, see `StoppingRule`). Returns {"stages": [per-stage stats]}."""
    stats: list[dict] = []
    stage_steps = recovery_schedule(recovery_steps, stages, schedule)
    gen = torch.Generator().manual_seed(seed)
    for stage in range(1, stages + 1):
        target = sparsity * stage / stages
        order = torch.randperm(len(train_items), generator=gen).tolist()
        prune_to(model, target, train_items, order, importance_examples, device, plan_cost)
        steps = stage_steps[stage - 1]
        items = list(train_items if recovery_items is None else recovery_items)
        kw: dict[str, Any] = {
            "teacher": teacher,
            "special_ids": special_ids,
            "desc": f"recover{desc} stage {stage}/{stages}",
            "device": device,
            "teacher_logits": teacher_logits,
            "teacher_layers": teacher_layers,
        }
        if stopping is None:
            tr = train_classifier(model, items, train_cfg(steps), **kw)
        else:
            what = f"recovery{desc} stage {stage}/{stages}"
            tr = stopping.train(
                model, items, train_cfg(steps), what=what, cap_field="recovery_steps", **kw
            )
        stopped = tr.pop("stopping", None)
        stats.append(
            {
                "target": target,
                "sparsity": model.sparsity(),
                "heads": list(model.encoder.config.heads),
                "ffn": list(model.encoder.config.ffn),
                "train": tr,
                **({"stopping": stopped} if stopped is not None else {}),
                **score(model),
            }
        )
        if on_stage is not None:
            on_stage(stage, stats[-1])
    return {"stages": stats}
