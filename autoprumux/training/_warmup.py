"""Token-retrieval warm-up for multiplexed models (DataMUX's retrieval pre-training objective).

The multiplexed encoder learns to recover every instance's tokens from the mixed representation,
on unlabeled sentences. Optionally (`hidden_distill_weight` > 0) each instance's demuxed token
states are also pulled towards the states the plain (N=1) base model computes for that instance
alone, so the multiplexed model learns to give every instance what the base model would have given
it (task-independent, like retrieval). Only the encoder, index embeddings, demultiplexer and
retrieval head are trained; the task head is untouched.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autoprumux._progress import progress
from autoprumux.data import Encoded, collate, infinite_batches
from autoprumux.errors import ConfigError
from autoprumux.models import MuxSequenceClassifier
from autoprumux.training._config import TrainConfig, make_optimizer
from autoprumux.training._losses import hidden_distill_loss, retrieval_loss


def retrieval_warmup(
    model: MuxSequenceClassifier,
    sentences: Sequence[Encoded],
    cfg: TrainConfig,
    *,
    special_ids: Sequence[int] = (),
    desc: str = "mux warm-up",
    device: str | torch.device = "cpu",
    teacher: MuxSequenceClassifier | None = None,
    hidden_distill_weight: float = 0.0,
) -> dict[str, Any]:
    """Train the retrieval objective (+ `hidden_distill_weight` x hidden-state distillation from
    the N=1 `teacher`) for `cfg.steps` steps; returns loss/accuracy averaged over the last 10%,
    and `curve`: the same averages over each tenth of the run (accuracy against steps)."""
    if model.n == 1:
        raise ConfigError("the retrieval warm-up is for multiplexed models (N > 1); N=1 needs none")
    if hidden_distill_weight > 0 and (teacher is None or teacher.n != 1):
        raise ConfigError("hidden-state distillation in the warm-up needs an N=1 teacher model")
    if teacher is not None:
        teacher.to(device).eval()

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    opt, sched = make_optimizer(model, cfg)
    it = infinite_batches(sentences, cfg.batch_size, seed=cfg.seed)
    losses: list[float] = []
    accs: list[float] = []
    hid: list[float] = []
    t0 = time.perf_counter()
    bar = progress(cfg.steps, desc)
    for _ in bar:
        batch = {k: v.to(device) for k, v in next(it).items()}
        ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        states = model.hidden_states(ids, mask, tt, positions="all")
        loss, acc = retrieval_loss(
            model,
            batch,
            special_ids=special_ids,
            positions=cfg.retrieval_positions,
            generator=gen,
            states=states,
        )
        losses.append(float(loss.detach()))
        if hidden_distill_weight > 0:
            assert teacher is not None
            with torch.no_grad():
                target = teacher.hidden_states(ids, mask, tt, positions="all")
            h_loss = hidden_distill_loss(states, target, mask)
            loss = loss + hidden_distill_weight * h_loss
            hid.append(float(h_loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        accs.append(acc)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{acc:.2f}")
    bar.close()
    model.eval()
    series = {"retrieval_loss": losses, "retrieval_accuracy": accs}
    if hid:
        series["hidden_distill_loss"] = hid
    curve = _curve(series)
    # the summary is the curve's last segment: the mean over the last tenth of the run
    last = curve[-1] if curve else dict.fromkeys(series, float("nan"))
    return {
        "curve": curve,
        "steps": float(cfg.steps),
        "seconds": time.perf_counter() - t0,
        **{k: v for k, v in last.items() if k != "step"},
    }


def _curve(series: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Each training-batch series (equal lengths) averaged over each tenth of the run (fewer
    segments for runs under 10 steps); `step` is the segment's last step."""
    n = min((len(v) for v in series.values()), default=0)
    bounds = sorted({round(n * i / 10) for i in range(1, 11)} - {0})
    out, lo = [], 0
    for hi in bounds:
        point = {"step": float(hi)}
        point.update({k: sum(v[lo:hi]) / (hi - lo) for k, v in series.items()})
        out.append(point)
        lo = hi
    return out


@torch.no_grad()
def evaluate_retrieval(
    model: MuxSequenceClassifier,
    sentences: Sequence[Encoded],
    *,
    special_ids: Sequence[int] = (),
    batch_size: int = 32,
    positions: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out retrieval loss and accuracy (deterministic in `seed`)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    tot_loss, tot_acc, n = 0.0, 0.0, 0
    for s in range(0, len(sentences) - batch_size + 1, batch_size):
        b = collate(sentences[s : s + batch_size])
        loss, acc = retrieval_loss(
            model, b, special_ids=special_ids, positions=positions, generator=gen
        )
        tot_loss += float(loss)
        tot_acc += acc
        n += 1
    if n == 0:
        raise ConfigError(f"need at least {batch_size} held-out sentences, got {len(sentences)}")
    return {"retrieval_loss": tot_loss / n, "retrieval_accuracy": tot_acc / n}
