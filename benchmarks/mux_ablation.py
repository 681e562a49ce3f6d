"""Issue 6 ablation: which part of the N > 1 recipe moves SST-2 dev accuracy (N=2 by default).

    python benchmarks/mux_ablation.py N WARMUP_STEPS WARMUPS POOLINGS FT_STEPS \
        [WARMUP_HIDDEN_W [FT_HIDDEN_WS [TAG [FT_LR]]]]
    # e.g. the rows of BENCHMARKS.md's recipe ablation:
    python benchmarks/mux_ablation.py 2 400 distill,retrieval mean,cls 300 1.0
    python benchmarks/mux_ablation.py 2 400 retrieval mean 300 1.0 1.0
    python benchmarks/mux_ablation.py 2 400 distill mean 300 1.0 1.0,0 _ln
    python benchmarks/mux_ablation.py 2 400 distill mean 1000 1.0 0 _ln 3e-4

WARMUPS: "retrieval" (token retrieval only) and/or "distill" (retrieval + WARMUP_HIDDEN_W x
hidden-state distillation from the plain N=1 base model). Each warm-up is saved under
--out-dir and reused by the fine-tunes (pooling x FT hidden-KD weight) that follow; every
fine-tune keeps 0.1 retrieval and 0.5 KD from the cached N=1 baseline of the default recipe.
Prints one RESULT line per fine-tune.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import replace

import torch

from autoprumux.models import MuxSequenceClassifier
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.training import TrainConfig, retrieval_warmup, train_classifier


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("n", type=int, help="mux width N (>= 2)")
    ap.add_argument("warmup_steps", type=int)
    ap.add_argument("warmups", help='comma-separated: "retrieval" and/or "distill"')
    ap.add_argument("poolings", help='comma-separated: "mean" and/or "cls"')
    ap.add_argument("ft_steps", type=int, help="task fine-tune steps")
    ap.add_argument("warmup_hidden_w", type=float, nargs="?", default=1.0)
    ap.add_argument("ft_hidden_ws", nargs="?", default="0", help="comma-separated weights")
    ap.add_argument("tag", nargs="?", default="", help="suffix of the saved warm-up folders")
    ap.add_argument("ft_lr", type=float, nargs="?", default=1e-4)
    args = ap.parse_args(argv)
    args.warmups = args.warmups.split(",")
    args.poolings = args.poolings.split(",")
    bad = [v for v in args.warmups if v not in ("retrieval", "distill")]
    bad += [p for p in args.poolings if p not in ("mean", "cls")]
    if bad:
        ap.error(
            f"unknown warm-up or pooling {bad}: warm-ups are retrieval/distill, poolings mean/cls"
        )
    if args.n < 2:
        ap.error(f"N ({args.n}) must be >= 2: the ablation is about multiplexed models")
    try:
        args.ft_hidden_ws = [float(x) for x in args.ft_hidden_ws.split(",")]
    except ValueError:
        ap.error(f"FT_HIDDEN_WS {args.ft_hidden_ws!r} must be comma-separated numbers, e.g. 1.0,0")
    return args


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    n, w, warmups, poolings, ft = a.n, a.warmup_steps, a.warmups, a.poolings, a.ft_steps
    hw, hks, tag, ft_lr = a.warmup_hidden_w, a.ft_hidden_ws, a.tag, a.ft_lr
    out_dir = os.environ.get("ABLATION_DIR", ".autoprumux/ablation")
    pipe = PruMuxPipeline(task="sst2")
    base = pipe.baseline()
    print("baseline", pipe.dev_metrics(base)["metric"], flush=True)
    sentences = pipe.warmup_sentences()
    r = pipe.recipe
    for v in warmups:
        path = f"{out_dir}/warm_N{n}_{v}_{w}_{hw}{tag}"
        if os.path.exists(path + "/autoprumux_config.json"):
            warm = MuxSequenceClassifier.load(path)
        else:
            warm = pipe.fresh_model(n)
            stats = retrieval_warmup(
                warm,
                sentences,
                TrainConfig(steps=w, batch_size=r.batch_size, lr=r.mux_warmup_lr, seed=r.seed),
                special_ids=pipe.special_ids,
                teacher=pipe.fresh_model(1) if v == "distill" else None,
                hidden_distill_weight=hw if v == "distill" else 0.0,
            )
            print("warm", v, n, w, json.dumps(stats), flush=True)
            warm.save(path)
        for pool in poolings:
            for hk in hks:
                m = copy.deepcopy(warm)
                m.encoder.embeddings.word.weight.requires_grad_(False)
                m.mux_config = replace(m.mux_config, pooling=pool)
                t0 = time.time()
                cfg = TrainConfig.from_recipe(
                    pipe.recipe,
                    ft,
                    retrieval_weight=0.1,
                    distill_weight=0.5,
                    hidden_distill_weight=hk,
                    lr=ft_lr,
                )
                train_classifier(
                    m, pipe.train_items, cfg, teacher=base, special_ids=pipe.special_ids
                )
                metric = pipe.dev_metrics(m)["metric"]
                print(
                    f"RESULT N={n} W={w} warm={v} hw={hw} pool={pool} hk={hk} ft={ft} "
                    f"lr={ft_lr} metric={metric:.2f} ft_s={time.time() - t0:.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sys.exit(main(sys.argv[1:]))
