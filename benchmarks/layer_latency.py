"""What a kept structure costs in time: a linear latency model of one encoder layer, fitted on
uniformly pruned copies of the packaged model, in fp32 (torch) and ov-int8 (OpenVINO).

    python benchmarks/layer_latency.py --out benchmarks/results/layer_latency_<cpu>.json

Every layer of a copy keeps the same shape (heads h, FFN units u, or a sub-layer removed), and
all copies are timed side by side (`time_interleaved`, 64 x 128 tokens). Least squares then fits

    batch time = t0 + layers * (a * [attention kept] + b * heads + c * [FFN kept] + d * units)

`a` and `c` are what a sub-layer costs beyond its heads or units (its LayerNorm, residual,
biases, the quantise / dequantise around it). The file gives each precision's fit in the terms
of `autoprumux.models.LayerTime`, the plan's time model: a head's time per parameter over an
FFN unit's, (b / head parameters) / (d / unit parameters), and each sub-layer's fixed time in
FFN units, a / d and c / d.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from _results import machine, write_json

from autoprumux.config import ThroughputConfig
from autoprumux.evaluation import time_interleaved
from autoprumux.models import (
    MuxSequenceClassifier,
    PruningPlan,
    apply_plan,
    resolve_model,
    to_openvino,
)
from autoprumux.models._encoder import Encoder, ffn_unit_param_count, head_param_count

# (heads, units, attention kept, FFN kept) of every layer of a copy
SHAPES = (
    (12, 1536, True, True),
    (6, 1536, True, True),
    (2, 1536, True, True),
    (12, 768, True, True),
    (12, 256, True, True),
    (2, 256, True, True),
    (0, 1536, False, True),
    (12, 0, True, False),
    (4, 0, True, False),
    (0, 512, False, True),
)


def build(encoder: Encoder, shape: tuple[int, int, bool, bool]):
    """A copy of `encoder` under a classifier head, every layer pruned to `shape`."""
    heads, units, attn, ffn = shape
    model = MuxSequenceClassifier(copy.deepcopy(encoder), num_labels=2).eval()
    n = len(model.encoder.layers)
    plan = PruningPlan(
        keep_heads=((tuple(range(heads)),) if attn else ((),)) * n,
        keep_ffn=((tuple(range(units)),) if ffn else ((),)) * n,
        drop_attn=(not attn,) * n,
        drop_ffn=(not ffn,) * n,
    )
    apply_plan(model.encoder, plan)
    return model, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", nargs="+", default=["fp32", "ov-int8"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default="benchmarks/results/layer_latency_cpu.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = ThroughputConfig(batch_size=64, seq_len=128, repeats=args.repeats)
    ids = torch.randint(1000, 20000, (cfg.batch_size, cfg.seq_len))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    runners = {}
    rows = []
    base = resolve_model(None)
    encoder = base.build_encoder()
    hp, up = head_param_count(base.config), ffn_unit_param_count(base.config)
    for shape in SHAPES:
        model, n = build(encoder, shape)
        for precision in args.precision:
            if precision == "fp32":
                m = model
            else:
                m = to_openvino(
                    model, precision, [(ids[:16], mask[:16], types[:16])], max_seq_len=128
                )
            name = f"{precision} h={shape[0]} u={shape[1]} attn={shape[2]} ffn={shape[3]}"
            runners[name] = ((lambda m=m: m(ids, mask, types)), cfg.batch_size)
            rows.append((name, precision, shape, n))
        print(f"built {shape}", file=sys.stderr)
    timed = time_interleaved(runners, cfg=cfg)
    out: dict = {"machine": machine("cpu"), "shapes": [], "fits": {}}
    for precision in args.precision:
        x, y = [], []
        for name, p, (h, u, attn, ffn), n in rows:
            if p != precision:
                continue
            ms = timed[name].latency_ms
            x.append([1.0, n * attn, n * h, n * ffn, n * u])
            y.append(ms)
            out["shapes"].append(
                {"precision": p, "heads": h, "units": u, "attn": attn, "ffn": ffn, "batch_ms": ms}
            )
        coef, *_ = np.linalg.lstsq(np.array(x), np.array(y), rcond=None)
        t0, a, b, c, d = (float(v) for v in coef)
        fitted = np.array(x) @ coef
        out["fits"][precision] = {
            "t0_ms": t0,
            "attn_sublayer_ms": a,
            "head_ms": b,
            "ffn_sublayer_ms": c,
            "unit_ms": d,
            "head_per_param": (b / hp) / (d / up),
            "attn_sublayer_units": a / d,
            "ffn_sublayer_units": c / d,
            "max_residual_pct": float(np.max(np.abs(fitted - y) / np.array(y)) * 100),
        }
        print(precision, out["fits"][precision])
    write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
