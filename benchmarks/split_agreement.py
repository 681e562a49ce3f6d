"""Which held-out split agrees with dev? Each model's loss on the validation split (it chooses),
on the stopping split (it stops training) and on dev (it reports), with their paired standard
errors, for the same models.

    python benchmarks/split_agreement.py --task sst2 --path --sparsities 0.3 0.5 0.7 0.8 \
        --out benchmarks/results/split_agreement_sst2_cpu.json

The models are the pruned fp32 candidates of the recipe (with `--path`, the pruning path's
snapshots: nothing chose them on any split), built or read from the cache. A loss is the
baseline's metric minus the model's on the same split (`paired_loss_se` for its spread). The
baseline is chosen on the stopping split (its plateau) and on nothing else, so the baseline's
stopping-split score is optimistic and the stopping-split losses read high by about that much.
A split that is a lucky draw for pruned models reads low at every sparsity; the table says how
far each split reads from dev, and whether that is inside their joint noise.
"""

from __future__ import annotations

import argparse
import math
import sys

from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux.config import Candidate, Recipe
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.pipeline._baseline import baseline_split_metrics, scored_beside_baseline

SPLITS = ("validation", "stopping", "dev")


def split_losses(pipe: PruMuxPipeline, model) -> dict[str, dict]:
    """{split: {loss, se}} of `model` against the baseline on each of `SPLITS`, scored as the
    pipeline scores an evaluation (`scored_beside_baseline`; the baseline predicted once per
    split)."""
    out = {}
    for split in SPLITS:
        base = baseline_split_metrics(pipe, split)["metric"]
        metrics, se = scored_beside_baseline(pipe, model, split, pairings=1)
        out[split] = {"loss": base - metrics["metric"], "se": se}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--path", action="store_true", help="the pruning path's snapshots")
    ap.add_argument("--sparsities", type=float, nargs="+", required=True)
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--model", default=None, help="default: the packaged MiniLM")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    overrides = recipe_overrides(args.recipe)
    recipe = Recipe(**{**overrides, **({"recovery": "path"} if args.path else {})})
    pipe = PruMuxPipeline(task=args.task, model=args.model, recipe=recipe, cache_dir=args.cache_dir)
    if pipe.stopping_items is pipe.validation_items or not pipe.validation_items:
        raise SystemExit(
            "this recipe holds out no stopping split apart from the validation split "
            f"({pipe.validation_note}); drop stopping_examples=0"
        )
    rows: list[dict] = []
    doc = {
        "task": args.task,
        "recipe": recipe.__dict__,
        "machine": machine(),
        "note": pipe.validation_note,
        "rows": rows,
    }
    print("| s | validation +- SE | stopping +- SE | dev +- SE | validation - dev (SDs) |")
    print("|---|---|---|---|---|")
    for s in args.sparsities:
        model = pipe.fp32_model(Candidate(sparsity=s))
        losses = split_losses(pipe, model)
        v, d = losses["validation"], losses["dev"]
        spread = math.hypot(v["se"], d["se"])
        gap = (v["loss"] - d["loss"]) / spread if spread else 0.0
        rows.append({"sparsity": s, **losses, "validation_minus_dev_sds": gap})
        cells = " | ".join(f"{losses[k]['loss']:.2f} +-{losses[k]['se']:.2f}" for k in SPLITS)
        print(f"| {s:g} | {cells} | {gap:+.1f} |", flush=True)
        if args.out:  # after every row: a long run stopped early keeps what it measured
            write_json(args.out, doc)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
