"""Issue 4 benchmark: Academus students against the full-depth baseline, latency and throughput.

    python benchmarks/students_latency.py --task sst2 --students 4 --depth 2 [--device cuda] \
        [--recipe student_unlabeled=32000 student_steps=1200 student_stacking_steps=600]

Builds (or takes from the cache) the fine-tuned baseline and K boosted students of `depth`
layers through the pipeline, as a user's recipe would (`--recipe` overrides its fields), then
for every prefix k = 1..K of the students measures the dev metric and, side by side with the
baseline in the same rounds (`time_interleaved`):
  * latency at batch 1 and batch 8 (median of --repeats timed passes),
  * throughput at --tp-batch examples of --tp-seq-len tokens,
and, as a check that the batched execution is what runs, the same K students executed one after
another (a Python loop over students). Prints a markdown table; JSON to
benchmarks/results/students_latency_<task>_k<K>d<depth>_<device>.json.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch
from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux.config import Recipe
from autoprumux.evaluation import ThroughputConfig, model_runner, time_interleaved
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.student_server import student_accuracy_losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per example, latency runs")
    ap.add_argument("--tp-batch", type=int, default=64)
    ap.add_argument("--tp-seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.recipe and not args.out:
        # the default file holds the default recipe's figures: another recipe must not replace it
        ap.error("--recipe needs --out FILE (the default file is the default recipe's)")
    try:
        recipe = Recipe(**recipe_overrides(args.recipe))
    except ValueError as e:
        ap.error(str(e))

    pipe = PruMuxPipeline(
        task=args.task, device=args.device, cache_dir=args.cache_dir, recipe=recipe
    )
    t0 = time.time()
    base = pipe.baseline()
    ens = pipe.students(args.students, args.depth)
    print(f"models ready in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    base_metric = pipe.baseline_metrics()["metric"]

    rows = []
    timings: dict[str, dict[str, float]] = {}
    for label, batch_size, seq_len in (
        ("latency_b1_ms", 1, args.seq_len),
        ("latency_b8_ms", 8, args.seq_len),
        ("throughput", args.tp_batch, args.tp_seq_len),
    ):
        cfg = ThroughputConfig(
            batch_size=batch_size,
            seq_len=seq_len,
            repeats=args.repeats if batch_size < 64 else max(5, args.repeats // 3),
            warmup=3,
            device=args.device,
        )
        batch = pipe.throughput_batch(cfg)
        fns = {"baseline": model_runner(base, batch, args.device)}
        trip = _triple(batch, args.device)
        for k in range(1, ens.k + 1):
            fns[f"k={k}"] = (functools.partial(ens, *trip, active=k), batch_size)

        # the same students one after another (the training path), for comparison
        def sequential(t: tuple[torch.Tensor, ...] = trip) -> torch.Tensor:
            return ens.student_logits(*t, parallel=False).sum(0)

        fns[f"k={ens.k} sequential"] = (sequential, batch_size)
        ens.eval()
        res = time_interleaved(fns, cfg=cfg)
        for name, r in res.items():
            d = timings.setdefault(name, {})
            if label == "throughput":
                d[label] = r.examples_per_second
            else:
                d[label] = r.latency_ms
    metrics = {"baseline": base_metric}
    for j, loss in student_accuracy_losses(pipe, ens).items():
        metrics[f"k={j}"] = base_metric - loss.accuracy_loss  # dev: reported
    metrics[f"k={ens.k} sequential"] = metrics[f"k={ens.k}"]
    base_t = timings["baseline"]
    for name, tm in timings.items():
        rows.append(
            {
                "model": name,
                "metric": metrics[name],
                "accuracy_loss": base_metric - metrics[name],
                **tm,
                "latency_b1_speedup": base_t["latency_b1_ms"] / tm["latency_b1_ms"],
                "latency_b8_speedup": base_t["latency_b8_ms"] / tm["latency_b8_ms"],
                "throughput_speedup": tm["throughput"] / base_t["throughput"],
            }
        )
    where = machine(args.device)
    out = Path(
        args.out
        or f"benchmarks/results/students_latency_{args.task}_k{args.students}d{args.depth}_{args.device}.json"
    )
    write_json(
        out,
        {
            "task": args.task,
            "metric": pipe.task.metric,
            "students": args.students,
            "depth": args.depth,
            "device": args.device,
            "machine": where,
            "recipe": pipe.recipe.__dict__,
            "seq_len": args.seq_len,
            "tp_batch": args.tp_batch,
            "tp_seq_len": args.tp_seq_len,
            "rows": rows,
        },
    )
    metric_name = pipe.task.metric
    print(
        f"| model | {metric_name} | loss | lat. b=1 ms | lat. b=8 ms | ex/s b={args.tp_batch} "
        "| b=1 speedup | b=8 speedup | tput speedup |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['metric']:.2f} | {row['accuracy_loss']:.2f} | "
            f"{row['latency_b1_ms']:.2f} | {row['latency_b8_ms']:.2f} | {row['throughput']:.1f} | "
            f"{row['latency_b1_speedup']:.2f}x | {row['latency_b8_speedup']:.2f}x | "
            f"{row['throughput_speedup']:.2f}x |"
        )
    print(f"\n({where}; latency at {args.seq_len} tokens, throughput at {args.tp_seq_len})")
    return 0


def _triple(b: dict[str, torch.Tensor], device: str) -> tuple[torch.Tensor, ...]:
    dev = torch.device(device)
    return tuple(b[n].to(dev) for n in ("input_ids", "attention_mask", "token_type_ids"))


if __name__ == "__main__":
    sys.exit(main())
