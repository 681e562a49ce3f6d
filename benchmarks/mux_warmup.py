"""Multiplexed accuracy against retrieval warm-up length, per N.

    python benchmarks/mux_warmup.py --task sst2 --mux 2 4 --steps 300 1200

For each N and warm-up length: the cached task-independent warm-up (retrieval accuracy, cost),
then the task fine-tune (0.9 task + 0.1 retrieval, KD from the baseline) and the dev metric,
against the N=1 baseline of the same recipe. Prints a markdown table; JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux.config import MuxShape, Recipe
from autoprumux.pipeline import PruMuxPipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--mux", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 1200])
    ap.add_argument("--variant", default="gaussian")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--recipe",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help=RECIPE_HELP,
    )
    args = ap.parse_args(argv)
    try:
        overrides = recipe_overrides(args.recipe)
    except ValueError as e:
        ap.error(str(e))
    out = Path(
        args.out or f"benchmarks/results/mux_warmup_{args.task}_{args.variant}_{args.device}.json"
    )
    where = machine(args.device)

    def save() -> None:  # after every row, so a run stopped at a time limit keeps what it measured
        doc = {
            "task": args.task,
            "device": args.device,
            "machine": where,
            "baseline": base_metric,
            "recipe": overrides,
            "rows": rows,
        }
        write_json(out, doc)

    t0 = time.time()
    base_metric: float | None = None
    rows: list[dict] = []
    for n in args.mux:
        for steps in args.steps:
            pipe = PruMuxPipeline(
                task=args.task,
                recipe=replace(Recipe(), **overrides, mux_warmup_steps=steps),
                device=args.device,
                cache_dir=args.cache_dir,
                mux_variant=args.variant,
            )
            t_row = time.time()
            if base_metric is None:
                base_metric = pipe.dev_metrics(pipe.baseline())["metric"]
                print(
                    json.dumps({"n": 1, "metric": base_metric, "seconds": time.time() - t_row}),
                    file=sys.stderr,
                    flush=True,
                )
                save()  # a run stopped before its first N > 1 row keeps the baseline
                t_row = time.time()
            _, warm = pipe.mux_warmup(n)
            metric = pipe.dev_metrics(pipe.mux_model(MuxShape(n)))["metric"]
            row = {
                "n": n,
                "warmup_steps": steps,
                "warmup_seconds": warm["warmup"]["seconds"],
                "retrieval_accuracy": warm["warmup"]["retrieval_accuracy"],
                "metric": metric,
                "gap": base_metric - metric,
                "seconds": time.time() - t_row,  # warm-up (unless cached) + fine-tune + dev
                "curve": warm["warmup"].get("curve"),  # retrieval acc. per tenth of the warm-up
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            save()
    print(f"baseline (N=1) {base_metric:.2f}\n")
    print("| N | warm-up steps | warm-up s | retrieval acc. | dev metric | gap to N=1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['warmup_steps']} | {r['warmup_seconds']:.0f} | {r['retrieval_accuracy']:.3f} | "
            f"{r['metric']:.2f} | {r['gap']:.2f} |"
        )
    print(f"\n({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
