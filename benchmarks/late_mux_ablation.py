"""Does a late-multiplexed model use its shared layers? Dev accuracy with and without them.

    python benchmarks/late_mux_ablation.py --task sst2 --mux 4 --mux-layers 2 \
        --combiners concat_skip [--recipe mux_finetune_steps=3000]

For each late shape (N, k, combiner) the pipeline's model (built, or taken from the cache) is
scored on dev as trained (the mean over the seeded pairings, and their spread), then again with
the demultiplexer's token half silenced: the shared layers' output at each token position then
reaches the head as zero, and only the instance's own states (the `concat_skip` map) and the
per-slot prefix states remain. A model whose accuracy survives that does not need the instances
it is multiplexed with: its answer comes from its first k layers, and dropping the shared layers
would serve it faster. Rows are added to --out (shapes already in it are kept and skipped, so
runs with other shapes accumulate in one file); prints a markdown table of them all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux.config import MuxShape, Recipe
from autoprumux.pipeline import PruMuxPipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--mux", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--mux-layers", type=int, nargs="+", default=[2])
    ap.add_argument("--combiners", nargs="+", default=["concat_skip"])
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    try:
        recipe = Recipe(**recipe_overrides(args.recipe))
    except ValueError as e:
        ap.error(str(e))
    if min(args.mux) < 2 or min(args.mux_layers) < 1:
        ap.error("late shapes only: every --mux >= 2 and every --mux-layers >= 1")
    out = Path(args.out or f"benchmarks/results/late_mux_ablation_{args.task}_cpu.json")
    pipe = PruMuxPipeline(task=args.task, recipe=recipe)
    earlier = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    rows = earlier["rows"]
    if rows and earlier["recipe"] != pipe.recipe.__dict__:
        ap.error(f"{out} was measured with another recipe; use another --out")
    done = {(r["n"], r["mux_layers"], r["combiner"]) for r in rows}
    baseline = pipe.dev_metrics(pipe.baseline())["metric"]
    for n in args.mux:
        for k in args.mux_layers:
            for combiner in args.combiners:
                if (n, k, combiner) in done:
                    continue
                model = pipe.mux_model(MuxShape(n, k, combiner)).eval()
                scored = pipe.dev_metrics(model)
                with torch.no_grad():
                    model.demux.proj.weight[:, : model.demux.hidden].zero_()
                silenced = pipe.dev_metrics(model)["metric"]
                rows.append(
                    {
                        "n": n,
                        "mux_layers": k,
                        "combiner": combiner,
                        "metric": scored["metric"],
                        "metric_std": scored["metric_std"],
                        "metric_without_shared_tokens": silenced,
                    }
                )
                print(f"N={n} k={k} {combiner}: done", file=sys.stderr, flush=True)
    write_json(
        out,
        {
            "task": pipe.task.name,
            "metric": pipe.task.metric,
            "baseline_metric": baseline,
            "recipe": pipe.recipe.__dict__,
            "machine": machine(),
            "rows": rows,
        },
    )
    print(f"baseline {baseline:.2f}\n")
    print("| N | k | combiner | dev | spread over pairings | without shared token states |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['mux_layers']} | {r['combiner']} | {r['metric']:.2f} | "
            f"{r['metric_std']:.2f} | {r['metric_without_shared_tokens']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
