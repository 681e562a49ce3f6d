"""Issue 6 ablation: which part of the N > 1 recipe moves SST-2 dev accuracy (N=2 by default).

    python benchmarks/mux_ablation.py N WARMUP_STEPS WARMUPS POOLINGS FT_STEPS \
        [WARMUP_HIDDEN_W [FT_HIDDEN_WS [TAG [FT_LR]]]]
    # e.g. the rows of BENCHMARKS.md's issue-6 ablation:
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


def main(argv: list[str]) -> int:
    n, w = int(argv[0]), int(argv[1])
    warmups, poolings, ft = argv[2].split(","), argv[3].split(","), int(argv[4])
    hw = float(argv[5]) if len(argv) > 5 else 1.0
    hks = [float(x) for x in argv[6].split(",")] if len(argv) > 6 else [0.0]
    tag = argv[7] if len(argv) > 7 else ""
    ft_lr = float(argv[8]) if len(argv) > 8 else 1e-4
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
            warm = pipe._fresh(n)
            stats = retrieval_warmup(
                warm,
                sentences,
                TrainConfig(steps=w, batch_size=r.batch_size, lr=r.mux_warmup_lr, seed=r.seed),
                special_ids=pipe.special_ids,
                teacher=pipe._fresh(1) if v == "distill" else None,
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
                cfg = pipe._train_cfg(
                    ft, retrieval_weight=0.1, distill_weight=0.5, hidden_distill_weight=hk, lr=ft_lr
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
