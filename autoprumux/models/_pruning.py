"""CoFi-style structured pruning: heads, FFN units and whole sub-layers / layers.

Why Fisher importance + mask search (Kwon et al. 2022) rather than CoFi's L0 hard-concrete masks
with a Lagrangian: L0 masks need many epochs of joint training to converge to a target, which is
hours per configuration on a CPU; the Fisher estimate needs one pass over a few hundred examples
and a greedy search, so a whole sparsity grid fits in minutes, and the accuracy it loses is won
back by the recovery fine-tune with distillation from the baseline (see `training`).

Importance of a head / FFN unit = 1/2 * empirical Fisher of its gate (mean over examples of the
squared gradient of the loss w.r.t. a multiplicative gate held at 1), a second-order estimate of
the mean loss increase when it is removed. Importance of a whole sub-layer (attention block or FFN
block incl. its LayerNorm) = the measured mean loss increase when it is skipped: both on one
scale, so the search can weigh a head against a sub-layer. The search removes,
greedily, whatever costs the least estimated loss per parameter saved ("params") or per unit of
inference time saved ("time", `LayerTime`), until the removed share of the encoder's parameters
reaches the target. All surgery happens in `apply_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from autoprumux.config import PLAN_COSTS
from autoprumux.models._encoder import (
    Encoder,
    EncoderLayer,
    ffn_unit_param_count,
    head_param_count,
)

# how `compute_importance` scores, part of the cache key of every pruned model: changed when a
# change of scoring changes what is removed ("mean": the Fisher averaged over its examples, on
# the sub-layer ablation's scale)
IMPORTANCE_SCORING = "mean"


@dataclass(frozen=True)
class LayerTime:
    """What a structure of an encoder layer costs in inference time, in FFN units' time (an FFN
    unit's cost grows, like every elementwise op of a sub-layer, with tokens x hidden size).

    Why not parameters: a kept sub-layer costs time its parameters do not count (its LayerNorm,
    residual and bias over every token, the int8 quantise / dequantise around it), and a head's
    attention scores grow with the sequence, not with its parameters. So a plan that counts
    parameters keeps many thin layers, which are slow per parameter. From a fit on uniformly
    pruned copies of the packaged MiniLM in OpenVINO int8 at 64 x 128 tokens
    (`benchmarks/layer_latency.py`, which reports these three fields). The fits differ by CPU
    (BENCHMARKS.md), so `LAYER_TIME` lies between them: within about 30% of each, which moves
    a plan's choice little, since it ranks structures whose costs differ far more. Part of the
    key of every pruned model."""

    head_per_param: float  # a head's time per parameter, over an FFN unit's per parameter
    attn_sublayer_units: float  # an attention sub-layer's time beyond its heads
    ffn_sublayer_units: float  # an FFN sub-layer's time beyond its units


LAYER_TIME = LayerTime(head_per_param=3.0, attn_sublayer_units=270.0, ffn_sublayer_units=310.0)


@dataclass(frozen=True)
class Importance:
    heads: tuple[torch.Tensor, ...]  # per layer (num_heads,)
    ffn: tuple[torch.Tensor, ...]  # per layer (ffn_size,)
    attn_sublayer: tuple[float, ...]  # per layer: loss increase when the attention block is skipped
    ffn_sublayer: tuple[float, ...]


@dataclass(frozen=True)
class PruningPlan:
    keep_heads: tuple[tuple[int, ...], ...]
    keep_ffn: tuple[tuple[int, ...], ...]
    drop_attn: tuple[bool, ...]
    drop_ffn: tuple[bool, ...]

    @classmethod
    def keep_all(cls, enc: Encoder) -> PruningPlan:
        layers = [_layer(x) for x in enc.layers]
        return cls(
            keep_heads=tuple(tuple(range(x.num_heads)) if x.attn_present else () for x in layers),
            keep_ffn=tuple(tuple(range(x.ffn_size)) if x.ffn_present else () for x in layers),
            drop_attn=tuple(not x.attn_present for x in layers),
            drop_ffn=tuple(not x.ffn_present for x in layers),
        )


def _layer(m: nn.Module) -> EncoderLayer:
    assert isinstance(m, EncoderLayer)
    return m


def sublayer_params(layer: EncoderLayer, which: str) -> int:
    mods: list[nn.Module | nn.Parameter | None]
    if which == "attn":
        if not layer.attn_present:
            return 0
        mods = [layer.qkv, layer.attn_out, layer.attn_norm, layer.attn_bias]
    else:
        if not layer.ffn_present:
            return 0
        mods = [layer.ffn_in, layer.ffn_out, layer.ffn_norm, layer.ffn_bias]
    total = 0
    for m in mods:
        if isinstance(m, nn.Parameter):
            total += m.numel()
        elif m is not None:
            total += sum(p.numel() for p in m.parameters())
    return total


# ---- importance -------------------------------------------------------------------------------
LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def compute_importance(
    encoder: Encoder,
    loss_fn: LossFn,
    fisher_batches: Iterable[dict[str, torch.Tensor]],
    ablation_batches: Iterable[dict[str, torch.Tensor]],
) -> Importance:
    """Fisher importance of heads/units (gates at 1) and ablation importance of sub-layers.

    `loss_fn(batch)` runs the full model (which contains `encoder`) and returns a scalar loss.
    Use small `fisher_batches` (one example, or one mux group): the Fisher is a mean of squared
    per-sample gradients, so a head's or unit's importance estimates the mean loss increase of
    its removal, on the scale of a sub-layer's measured one.
    """
    layers = [_layer(x) for x in encoder.layers]
    was_training = encoder.training
    encoder.eval()
    saved_grad = {p: p.requires_grad for p in encoder.parameters()}
    for p in encoder.parameters():
        p.requires_grad_(False)
    head_f = [torch.zeros(x.num_heads) for x in layers]
    ffn_f = [torch.zeros(x.ffn_size) for x in layers]
    dev = next(encoder.parameters()).device  # gates live beside the activations they scale
    batches = 0
    try:
        for x in layers:
            if x.attn_present and x.num_heads:
                x.head_gate = torch.ones(x.num_heads, device=dev, requires_grad=True)
            if x.ffn_present and x.ffn_size:
                x.ffn_gate = torch.ones(x.ffn_size, device=dev, requires_grad=True)
        for batch in fisher_batches:
            batches += 1
            loss = loss_fn(batch)
            gates = [g for x in layers for g in (x.head_gate, x.ffn_gate) if g is not None]
            grads = torch.autograd.grad(loss, gates, allow_unused=True)
            it = iter(grads)
            for i, x in enumerate(layers):
                if x.head_gate is not None:
                    g = next(it)
                    if g is not None:
                        head_f[i] += g.detach().float().cpu() ** 2
                if x.ffn_gate is not None:
                    g = next(it)
                    if g is not None:
                        ffn_f[i] += g.detach().float().cpu() ** 2
    finally:
        for x in layers:
            x.head_gate = None
            x.ffn_gate = None
        for p, r in saved_grad.items():
            p.requires_grad_(r)
    attn_abl, ffn_abl = _ablation(encoder, loss_fn, list(ablation_batches))
    encoder.train(was_training)
    # a mean over the batches, like the ablation's loss change it is weighed against
    scale = 0.5 / max(batches, 1)
    return Importance(
        heads=tuple(scale * f for f in head_f),
        ffn=tuple(scale * f for f in ffn_f),
        attn_sublayer=attn_abl,
        ffn_sublayer=ffn_abl,
    )


@torch.no_grad()
def _ablation(
    encoder: Encoder, loss_fn: LossFn, batches: list[dict[str, torch.Tensor]]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not batches:
        n = len(encoder.layers)
        return (float("inf"),) * n, (float("inf"),) * n

    def mean_loss() -> float:
        return float(sum(float(loss_fn(b)) for b in batches) / len(batches))

    base = mean_loss()
    attn: list[float] = []
    ffn: list[float] = []
    for m in encoder.layers:
        x = _layer(m)
        for flag, out in (("attn_present", attn), ("ffn_present", ffn)):
            if not getattr(x, flag):
                out.append(0.0)
                continue
            setattr(x, flag, False)
            try:
                out.append(mean_loss() - base)
            finally:
                setattr(x, flag, True)
    return tuple(attn), tuple(ffn)


# ---- mask search ------------------------------------------------------------------------------
def search_plan(
    encoder: Encoder,
    importance: Importance,
    target_sparsity: float,
    original_params: int,
    cost: str = "params",
    max_sublayers: int | None = None,
) -> PruningPlan:
    """Greedy: repeatedly remove the structure with the least estimated loss per parameter
    saved (`cost` "params") or per unit of time saved ("time": `LAYER_TIME`, in FFN units'
    parameters), until the removed parameters reach the target. At most `max_sublayers` whole
    sub-layers go in one plan (None: no limit; a layer's last head counts as its attention
    block): each sub-layer's loss is estimated alone, so several removed at once compound.

    `target_sparsity` is relative to `original_params` (the unpruned encoder's layer parameters),
    so pruning an already-pruned model towards a higher target works.
    """
    if cost not in PLAN_COSTS:
        raise ValueError(f"plan cost {cost!r} is not one of {PLAN_COSTS}")  # checked in Recipe
    cfg = encoder.config
    hp, up = head_param_count(cfg), ffn_unit_param_count(cfg)
    timed = cost == "time"
    # time saved, in FFN-unit parameters: a head's parameters weigh more, a whole sub-layer
    # saves its fixed cost besides what it holds
    head_time = hp * (LAYER_TIME.head_per_param if timed else 1.0)
    attn_fixed = up * LAYER_TIME.attn_sublayer_units if timed else 0.0
    ffn_fixed = up * LAYER_TIME.ffn_sublayer_units if timed else 0.0
    layers = [_layer(x) for x in encoder.layers]
    current = encoder.prunable_parameters()
    need = target_sparsity * original_params - (original_params - current)
    slack = 0.01 * original_params  # a sub-layer removal may overshoot the target by <= 1 point
    # per layer: structures ordered by importance (ascending)
    head_order = [
        list(torch.argsort(importance.heads[i]).tolist()) if x.attn_present else []
        for i, x in enumerate(layers)
    ]
    ffn_order = [
        list(torch.argsort(importance.ffn[i]).tolist()) if x.ffn_present else []
        for i, x in enumerate(layers)
    ]
    hpos = [0] * len(layers)
    upos = [0] * len(layers)
    paid_attn = [0.0] * len(layers)
    paid_ffn = [0.0] * len(layers)
    drop_attn = [not x.attn_present for x in layers]
    drop_ffn = [not x.ffn_present for x in layers]
    removed = 0.0
    attn_left = [sublayer_params(x, "attn") for x in layers]
    ffn_left = [sublayer_params(x, "ffn") for x in layers]
    # FFN units are many and cheap: take them in chunks of at most 0.25% of the encoder
    chunk_size = max(1, min(8, int(0.0025 * original_params) // up))
    sublayers_removed = 0
    while removed < need:
        whole_ok = max_sublayers is None or sublayers_removed < max_sublayers
        cands: list[tuple[float, str, int, int]] = []
        for i in range(len(layers)):
            if not drop_attn[i]:
                heads_left = len(head_order[i]) - hpos[i]
                if heads_left > 1 or (heads_left == 1 and whole_ok):
                    h = head_order[i][hpos[i]]
                    cands.append((float(importance.heads[i][h]) / head_time, "head", i, hp))
                if whole_ok:
                    loss = max(importance.attn_sublayer[i] - paid_attn[i], 0.0)
                    saved = attn_left[i] - heads_left * hp + heads_left * head_time + attn_fixed
                    cands.append((loss / max(saved, 1.0), "attn", i, attn_left[i]))
            if not drop_ffn[i]:
                if upos[i] < len(ffn_order[i]):
                    chunk = ffn_order[i][upos[i] : upos[i] + chunk_size]
                    loss = float(importance.ffn[i][chunk].sum())
                    cands.append((loss / (up * len(chunk)), "ffn", i, up * len(chunk)))
                if whole_ok:
                    loss = max(importance.ffn_sublayer[i] - paid_ffn[i], 0.0)
                    saved = ffn_left[i] + ffn_fixed
                    cands.append((loss / max(saved, 1.0), "ffnblock", i, ffn_left[i]))
        if not cands:
            break
        # never overshoot the target by more than the slack when a smaller step exists
        fitting = [c for c in cands if removed + c[3] <= need + slack]
        best = min(fitting) if fitting else min(cands, key=lambda c: c[3])
        _, kind, i, params = best
        if kind == "head":
            h = head_order[i][hpos[i]]
            paid_attn[i] += float(importance.heads[i][h])
            hpos[i] += 1
            attn_left[i] -= hp
            sublayers_removed += hpos[i] == len(head_order[i])  # its last head
        elif kind == "ffn":
            chunk = ffn_order[i][upos[i] : upos[i] + chunk_size]
            paid_ffn[i] += float(importance.ffn[i][chunk].sum())
            upos[i] += len(chunk)
            ffn_left[i] -= up * len(chunk)
        elif kind == "attn":
            drop_attn[i] = True
            attn_left[i] = 0
            sublayers_removed += 1
        else:
            drop_ffn[i] = True
            ffn_left[i] = 0
            sublayers_removed += 1
        removed += params
    keep_heads = tuple(
        () if drop_attn[i] else tuple(sorted(head_order[i][hpos[i] :])) for i in range(len(layers))
    )
    keep_ffn = tuple(
        () if drop_ffn[i] else tuple(sorted(ffn_order[i][upos[i] :])) for i in range(len(layers))
    )
    return PruningPlan(keep_heads, keep_ffn, tuple(drop_attn), tuple(drop_ffn))


# ---- surgery ----------------------------------------------------------------------------------
@torch.no_grad()
def _pruned_layer(
    old: EncoderLayer, cfg, heads: tuple[int, ...], units: tuple[int, ...], attn: bool, ffn: bool
) -> EncoderLayer:
    new = EncoderLayer(cfg, len(heads) if attn else 0, len(units) if ffn else 0, attn, ffn)
    d, nh = old.head_dim, old.num_heads
    if attn:
        assert old.attn_present
        if heads:
            assert (
                old.qkv is not None
                and old.attn_out is not None
                and new.qkv is not None
                and new.attn_out is not None
            )
            idx = torch.tensor(heads)
            cols = (idx[:, None] * d + torch.arange(d)[None]).reshape(-1)  # (kept*d,)
            rows = torch.cat([blk * nh * d + cols for blk in range(3)])  # q | k | v
            new.qkv.weight.copy_(old.qkv.weight[rows])
            new.qkv.bias.copy_(old.qkv.bias[rows])
            new.attn_out.weight.copy_(old.attn_out.weight[:, cols])
            new.attn_out.bias.copy_(old.attn_out.bias)
        else:
            assert new.attn_bias is not None
            src = old.attn_out.bias if old.attn_out is not None else old.attn_bias
            assert src is not None
            new.attn_bias.copy_(src)
        new.attn_norm.load_state_dict(old.attn_norm.state_dict())
    if ffn:
        assert old.ffn_present
        if units:
            assert (
                old.ffn_in is not None
                and old.ffn_out is not None
                and new.ffn_in is not None
                and new.ffn_out is not None
            )
            u = torch.tensor(units)
            new.ffn_in.weight.copy_(old.ffn_in.weight[u])
            new.ffn_in.bias.copy_(old.ffn_in.bias[u])
            new.ffn_out.weight.copy_(old.ffn_out.weight[:, u])
            new.ffn_out.bias.copy_(old.ffn_out.bias)
        else:
            assert new.ffn_bias is not None
            src = old.ffn_out.bias if old.ffn_out is not None else old.ffn_bias
            assert src is not None
            new.ffn_bias.copy_(src)
        new.ffn_norm.load_state_dict(old.ffn_norm.state_dict())
    new.train(old.training)
    return new


def apply_plan(encoder: Encoder, plan: PruningPlan) -> None:
    """Physically shrink the encoder to `plan`; layers with both sub-layers removed disappear."""
    layers = [_layer(x) for x in encoder.layers]
    if len(plan.keep_heads) != len(layers):
        raise ValueError(f"plan has {len(plan.keep_heads)} layers, encoder has {len(layers)}")
    new_layers = []
    for i, old in enumerate(layers):
        attn, ffn = not plan.drop_attn[i], not plan.drop_ffn[i]
        if not attn and not ffn:
            continue  # whole layer removed
        heads = plan.keep_heads[i] if attn else ()
        units = plan.keep_ffn[i] if ffn else ()
        if attn and any(h >= old.num_heads for h in heads):
            raise ValueError(
                f"layer {i}: plan keeps head {max(heads)} but the layer has {old.num_heads}"
            )
        new_layers.append(_pruned_layer(old, encoder.config, heads, units, attn, ffn))
    param = next(encoder.parameters())
    encoder.layers = nn.ModuleList(x.to(param.device) for x in new_layers)
    encoder.refresh_config()


def counted_sparsity(encoder: Encoder, original_params: int) -> float:
    """Share of the original encoder-layer parameters that the physical model no longer has."""
    return 1.0 - encoder.prunable_parameters() / original_params
