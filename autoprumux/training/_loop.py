"""The training loops: task fine-tuning, distillation and the mux retrieval objective, in the
standard loop or driving the L2L executor (`train_classifier` picks by `TrainConfig.trainer`);
and `predict`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from autoprumux._progress import LossMeter, progress
from autoprumux.data import Encoded, collate, infinite_batches
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier, StudentEnsemble
from autoprumux.training._config import (
    TrainConfig,
    make_optimizer,
    optimizer_step,
    resolve_autocast,
)
from autoprumux.training._l2l import L2LExecutor
from autoprumux.training._losses import classifier_loss, target_batches
from autoprumux.training._teacher import TeacherLayers

log = logging.getLogger("autoprumux")


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
    logit_offsets: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_layers: TeacherLayers | None = None,
    on_step: Callable[[int, float], bool] | None = None,
    schedule: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """Fine-tune `model` on the task for `cfg.steps` steps.

    loss = (1 - w_r) * [(1 - w_d) * CE + w_d * KD(teacher)] + w_r * retrieval
           + w_h * hidden-state distillation(teacher). Returns summary stats.
    With ``cfg.trainer == "l2l"`` the same loss is trained by the layer-to-layer executor
    (`L2LExecutor`: model in host memory, `cfg.micro_batches` micro-batches per step; the model
    ends in host memory and the stats add ``peak_device_bytes``).
    With `logit_targets` (M, labels), the items' labels are row indices into it and the loss is
    `cfg.logit_loss` between the logits and those rows (regression distillation of the
    students); `logit_offsets` (M, labels), fixed logits added to the model's before the loss
    (the sum of the students before this one).
    `teacher_logits` (M, labels), the teacher's logits for every item of `train` (see
    `predict`), stand in for running the teacher when only its logits are needed, so a step
    costs the student's forward and backward alone. With `teacher_layers` too (the teacher's
    per-layer states for every item, see `write_teacher_layers`), a layer-distilling step reads
    the teacher's layers from that table instead of running it.
    `on_step(step, running loss)`, called after each step (1-based) of the standard loop, ends
    training early by returning True; `schedule` (step -> LR multiplier, default
    `lr_schedule(cfg)`: warm-up, then linear decay to `cfg.steps`) may change as it trains
    (`AnnealOnPlateau`); stats["steps"] are the steps taken.
    """
    if on_step is not None and cfg.trainer != "standard":
        raise ValueError("on_step is called by the standard loop only (trainer 'standard')")
    if cfg.steps == 0:
        return {"steps": 0.0, "seconds": 0.0}
    if (
        cfg.distill_weight > 0 or cfg.hidden_distill_weight > 0 or cfg.layer_distill_weight > 0
    ) and teacher is None:
        raise ConfigError(
            "distill_weight / hidden_distill_weight / layer_distill_weight > 0 need a teacher"
        )
    if cfg.layer_distill_weight > 0 and (model.n > 1 or (teacher is not None and teacher.n > 1)):
        raise ConfigError("layer_distill_weight > 0 is for N=1 models (N>1 states are mixed)")
    passed: dict[str, Any] = {
        "teacher": teacher,
        "special_ids": special_ids,
        "desc": desc,
        "device": device,
        "logit_targets": logit_targets,
        "logit_offsets": logit_offsets,
    }
    if cfg.trainer == "auto":
        return _standard_or_l2l(
            model,
            train,
            cfg,
            teacher_logits=teacher_logits,
            teacher_layers=teacher_layers,
            **passed,
        )
    if cfg.trainer == "l2l":
        return train_classifier_l2l(model, train, cfg, **passed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt, sched = make_optimizer(model, cfg, schedule=schedule)
    use_retrieval = cfg.retrieval_weight > 0 and model.n > 1
    use_hidden = cfg.hidden_distill_weight > 0
    use_layers = cfg.layer_distill_weight > 0
    layer_table = teacher_layers if use_layers and not use_hidden else None
    table = None if use_hidden or (use_layers and layer_table is None) else teacher_logits
    if table is not None and len(table) != len(train):
        raise ValueError(f"teacher_logits has {len(table)} rows for {len(train)} items")
    if layer_table is not None and (table is None or len(layer_table) != len(train)):
        raise ValueError(
            "teacher_layers needs teacher_logits, and both one row per training item "
            f"({len(layer_table)} layer rows for {len(train)} items)"
        )
    it = target_batches(
        infinite_batches(
            train,
            cfg.batch_size,
            seed=cfg.seed,
            with_index=table is not None,
            batching=cfg.batching,
        ),
        logit_targets,
        logit_offsets,
    )
    t0 = time.perf_counter()
    bar = progress(cfg.steps, desc)
    meter = LossMeter(bar, cfg.lr)
    taken = 0
    autocast = forward_autocast(resolve_autocast(cfg.autocast, device), device)
    for _ in bar:
        batch = {k: v.to(device) for k, v in next(it).items()}
        with autocast:
            ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
            layers: list[torch.Tensor] = []
            t_layers: list[torch.Tensor] = []
            keep = layers if use_layers else None
            if use_retrieval or use_hidden or use_layers:
                states = model.hidden_states(ids, mask, tt, positions="all", layers=keep)
                logits = model.logits_from_states(states, mask)
            else:
                states = None
                logits = model(ids, mask, tt)
            t_logits = t_states = None
            if table is not None:
                t_logits = table[batch["index"].cpu()].to(device)
                if layer_table is not None:
                    t_layers = layer_table.batch(batch["index"], ids.shape[1], device)
            elif teacher is not None and (cfg.distill_weight > 0 or use_hidden or use_layers):
                with torch.no_grad():
                    if use_hidden or use_layers:
                        t_states = teacher.hidden_states(
                            ids, mask, tt, positions="all", layers=t_layers if use_layers else None
                        )
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
                layers=layers,
                teacher_layers=t_layers,
            )
        optimizer_step(model, opt, sched, loss, cfg)
        meter.update(float(loss.detach()))
        taken += 1
        if on_step is not None and on_step(taken, meter.final):
            break
    bar.close()
    model.eval()
    return {
        "steps": float(taken),
        "seconds": time.perf_counter() - t0,
        "final_loss": meter.final,
    }


def forward_autocast(
    precision: str, device: str | torch.device
) -> contextlib.AbstractContextManager[object]:
    """The context a training forward runs in: bf16 autocast on the device's type, or none
    (weights, gradients and the optimizer stay fp32 either way)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _standard_or_l2l(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    teacher_logits: torch.Tensor | None,
    teacher_layers: TeacherLayers | None,
    **kw: Any,
) -> dict[str, float]:
    """`trainer="auto"`: the standard loop; when the device runs out of memory, the model is put
    back as it was and trained from the start by the L2L executor, whose device memory does not
    grow with depth (its stats then say ``l2l_fallback`` 1)."""
    start = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    try:
        stats = train_classifier(
            model,
            train,
            replace(cfg, trainer="standard"),
            teacher_logits=teacher_logits,
            teacher_layers=teacher_layers,
            **kw,
        )
        return {**stats, "l2l_fallback": 0.0}
    except torch.OutOfMemoryError as e:
        log.warning(
            "out of device memory in the standard loop (%s); training again with L2L "
            "(%d micro-batches)",
            str(e).splitlines()[0] if str(e) else "OutOfMemoryError",
            cfg.micro_batches,
        )
    model.load_state_dict(start)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    stats = train_classifier(model, train, replace(cfg, trainer="l2l"), **kw)
    return {**stats, "l2l_fallback": 1.0}


def train_classifier_l2l(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    teacher: MuxSequenceClassifier | None = None,
    special_ids: Sequence[int] = (),
    desc: str = "fine-tune",
    device: str | torch.device = "cpu",
    logit_targets: torch.Tensor | None = None,
    logit_offsets: torch.Tensor | None = None,
) -> dict[str, float]:
    """`train_classifier` with the L2L executor (``cfg.trainer == "l2l"``); the model ends in
    host memory. The stats add ``peak_device_bytes``, the executor's ledger peak."""
    torch.manual_seed(cfg.seed)
    it = target_batches(
        infinite_batches(train, cfg.batch_size, seed=cfg.seed, batching=cfg.batching),
        logit_targets,
        logit_offsets,
    )
    t0 = time.perf_counter()
    with L2LExecutor(
        model, cfg, device=device, teacher=teacher, special_ids=special_ids
    ) as executor:
        bar = progress(cfg.steps, desc)
        meter = LossMeter(bar, cfg.lr)
        for _ in bar:
            meter.update(executor.step(next(it)))
        bar.close()
    model.eval()
    return {
        "steps": float(cfg.steps),
        "seconds": time.perf_counter() - t0,
        "final_loss": meter.final,
        "peak_device_bytes": float(executor.stats.peak_bytes),
    }


@torch.no_grad()
def predict(
    model: torch.nn.Module,  # MuxSequenceClassifier or StudentEnsemble
    items: Sequence[Encoded],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits for every item, in order (dummy rows for N are handled by the model). A model
    that reads each item alone (N=1, students) runs them in length-sorted batches, each padded
    only to its own longest item; a multiplexed one in the order given, since the N items of a
    group are mixed."""
    model.to(device).eval()
    alone = getattr(model, "n", None) == 1 or isinstance(model, StudentEnsemble)
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids)) if alone else None
    ranked = [items[i] for i in order] if order is not None else list(items)
    out = []
    for s in range(0, len(ranked), batch_size):
        b = collate(ranked[s : s + batch_size])
        out.append(
            model(
                b["input_ids"].to(device),
                b["attention_mask"].to(device),
                b["token_type_ids"].to(device),
            )
            .float()
            .cpu()
        )
    if not out:
        return torch.zeros((0, int(getattr(model, "num_labels", 0))))
    logits = torch.cat(out)
    if order is None:
        return logits
    restored = torch.empty_like(logits)
    restored[torch.tensor(order)] = logits
    return restored
