"""Training a late-multiplexed model whose backbone is frozen, at the cost of its shared layers.

With the encoder frozen, what the first k layers give each training item, and what the fine-tuned
baseline (the teacher) gives it, never change: `frozen_targets` computes them once, in one pass
over the training set with dropout off, and every step then runs only the combiner, the shared
layers (forward and backward), the demultiplexer and the heads. The loss is `classifier_loss`'s:
CE with KD from the baseline's logits, the retrieval term, and the alignment of each
demultiplexed state with the baseline's own final state at the same position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from autoprumux._progress import LossMeter, progress
from autoprumux.data import Encoded, collate, infinite_batches
from autoprumux.models import MuxSequenceClassifier, attention_bias
from autoprumux.training._config import TrainConfig, make_optimizer, optimizer_step
from autoprumux.training._losses import classifier_loss


@dataclass(frozen=True)
class FrozenTargets:
    """Per training item, padded to the longest item: the states after the first k layers,
    the teacher's final states (fp16 to halve the memory) and the teacher's logits."""

    instance_states: torch.Tensor  # (M, L, H) fp16
    teacher_states: torch.Tensor  # (M, L, H) fp16
    teacher_logits: torch.Tensor  # (M, labels) fp32


@torch.no_grad()
def frozen_targets(
    model: MuxSequenceClassifier,
    teacher: MuxSequenceClassifier,
    items: Sequence[Encoded],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> FrozenTargets:
    """One pass of the frozen first k layers (the model's, per instance) and of the teacher."""
    k = model.instance_layers
    length = max(len(it.input_ids) for it in items)
    model.to(device).eval()
    teacher.to(device).eval()
    inst, t_states, t_logits = [], [], []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start : start + batch_size], pad_to=length)
        b = {key: v.to(device) for key, v in batch.items()}
        ids, mask, tt = b["input_ids"], b["attention_mask"], b["token_type_ids"]
        states = teacher.hidden_states(ids, mask, tt, positions="all")
        t_states.append(states.half().cpu())
        t_logits.append(teacher.logits_from_states(states, mask).float().cpu())
        # the model's own first k layers (frozen: equal to the teacher's unless it was pruned)
        x = model.encoder.embeddings(ids, tt)
        bias = attention_bias(mask, x.dtype)
        for layer in list(model.encoder.layers)[:k]:
            x = layer(x, bias)
        inst.append(x.half().cpu())
    return FrozenTargets(torch.cat(inst), torch.cat(t_states), torch.cat(t_logits))


def shared_layer_names(model: MuxSequenceClassifier) -> list[str]:
    """The encoder parameters after the per-instance layers (the shared layers and the pooler),
    named as in `model.encoder`."""
    k = model.instance_layers
    return [
        name
        for name, _ in model.encoder.named_parameters()
        if name.startswith("pooler.")
        or (name.startswith("layers.") and int(name.split(".")[1]) >= k)
    ]


def train_late_frozen(
    model: MuxSequenceClassifier,
    train: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    teacher: MuxSequenceClassifier,
    shared_lr: float = 0.0,
    special_ids: Sequence[int] = (),
    desc: str = "late mux fine-tune",
    device: str | torch.device = "cpu",
    on_step: Callable[[int, float], bool] | None = None,
    schedule: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """Train the adapters of a late-multiplexed model whose encoder is frozen (see the module
    doc) for `cfg.steps` steps; returns summary stats incl. the targets' one-off cost. With
    `shared_lr` > 0 the encoder's trainable parameters (which must lie after the first k
    layers: the shared layers and the pooler) train at that rate. `on_step(step, running loss)`
    ends training early by returning True, as in `train_classifier`."""
    if model.n == 1 or not model.instance_layers:
        raise ValueError("train_late_frozen is for late-multiplexed models (N > 1, k > 0)")
    trainable = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    if not set(trainable) <= (set(shared_layer_names(model)) if shared_lr else set()):
        raise ValueError(
            "train_late_frozen needs the embeddings and the first k layers frozen, and the "
            f"shared layers frozen unless shared_lr > 0; trainable: {trainable[:3]}"
        )
    t0 = time.perf_counter()
    targets = frozen_targets(model, teacher, train, device=device)
    prepared = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    opt, sched = make_optimizer(
        model, cfg, {f"encoder.{n}": shared_lr for n in trainable}, schedule
    )
    it = infinite_batches(train, cfg.batch_size, seed=cfg.seed, with_index=True)
    bar = progress(cfg.steps, desc)
    meter = LossMeter(bar, cfg.lr)
    taken = 0
    for _ in bar:
        batch = next(it)
        index = batch.pop("index")
        batch = {key: v.to(device) for key, v in batch.items()}
        ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        length = ids.shape[1]
        lay = model.layout(ids, mask, tt)
        x = targets.instance_states[index, :length].to(device, torch.float32)
        pad = lay.ids.shape[0] - x.shape[0]  # dummy rows to a multiple of N
        if pad:
            x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
        states = model.states_from_instance_layers(lay, x, positions="all")
        logits = model.logits_from_states(states, mask)
        loss = classifier_loss(
            model,
            batch,
            cfg,
            logits=logits,
            states=states,
            teacher_logits=targets.teacher_logits[index].to(device),
            teacher_states=targets.teacher_states[index, :length].to(device, torch.float32),
            special_ids=special_ids,
            generator=gen,
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
        "targets_seconds": prepared,
        "final_loss": meter.final,
    }
