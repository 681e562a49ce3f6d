"""The reference grid, built point by point and resumable across runs and machines.

    python benchmarks/reference_grid.py --task sst2 \
        --sparsities 0 0.3 0.5 0.6 0.7 0.8 0.9 0.95 --mux 1 2 4 [--precision fp32 int8]

Each point is `PruMuxPipeline.evaluate(Candidate(sparsity=s, mux=N, precision=p))`: the
candidate's dev metric and its throughput timed side by side with the fp32 baseline in the same
process (so every speedup is a ratio from one run). After every point the JSON (benchmarks/results/reference_grid_<task>_<device>.json) is
rewritten atomically, and points already in it are skipped: a killed run, or a new run on a
fresh machine, continues where the last one stopped (trained models are rebuilt only for the
points still missing). The file's rows feed benchmarks/search_regret.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux.config import Candidate, Recipe
from autoprumux.evaluation import ThroughputConfig
from autoprumux.pipeline import PruMuxPipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument(
        "--sparsities",
        type=float,
        nargs="+",
        default=None,
        help="default: 0 0.3 0.5 0.6 0.7 0.8 0.9 0.95; with --path, 0 and every level of the path",
    )
    ap.add_argument(
        "--path",
        action="store_true",
        help="pruned N=1 points are the pruning path's snapshots (recipe recovery=path): the "
        "path is built first, once, and its levels and cost go to the JSON",
    )
    ap.add_argument("--mux", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument(
        "--mux-layers",
        type=int,
        nargs="+",
        default=[0],
        help="per-instance layers k of the N > 1 points (late multiplexing; 0 = early mixing)",
    )
    ap.add_argument(
        "--combiners", nargs="+", default=["binding"], help="combiners of the N > 1 points"
    )
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--model", default=None, help="default: the packaged MiniLM")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tp-batch", type=int, default=64)
    ap.add_argument("--tp-seq-len", type=int, default=128)
    ap.add_argument("--tp-repeats", type=int, default=10)
    ap.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="time every model (the baseline too) as a replayed CUDA graph",
    )
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--table", action="store_true", help="print the measured points as markdown and exit"
    )
    args = ap.parse_args(argv)
    try:
        overrides = recipe_overrides(args.recipe)
        recipe = Recipe(**{**overrides, **({"recovery": "path"} if args.path else {})})
    except ValueError as e:
        ap.error(str(e))
    if args.sparsities is None:
        args.sparsities = (
            [0.0, *recipe.path_grid] if args.path else [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
        )

    out = Path(args.out or f"benchmarks/results/reference_grid_{args.task}_{args.device}.json")
    data = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    if args.table:
        print(markdown_table(data))
        return 0
    stored = data.get("recipe")
    if data["rows"] and stored is not None:
        before = {**Recipe().__dict__, **stored}  # a field added since: its default then
        asked = dict(recipe.__dict__)
        if asked["max_seq_len"] is None:  # resolved from the data: the stored value is that
            asked["max_seq_len"] = before["max_seq_len"]
        diff = {k: (before[k], v) for k, v in asked.items() if before[k] != v}
        if diff:  # resuming would mix points of two recipes in one grid
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            print(
                f"{out} was measured with another recipe ({changes}); "
                "measure into a new file with --out",
                file=sys.stderr,
            )
            return 2
    done = {point(r) for r in data["rows"]}
    shapes = [(k, c) for c in args.combiners for k in args.mux_layers]
    todo = [
        (s, n, p, k, c)
        for p in args.precision
        for n in args.mux
        for k, c in (shapes if n > 1 else [(0, "binding")])
        for s in args.sparsities
        if (s, n, p, k, c) not in done
    ]
    print(f"{len(done)} points already measured, {len(todo)} to go", file=sys.stderr, flush=True)
    if not todo:
        return 0
    pipe = PruMuxPipeline(
        task=args.task,
        model=args.model,
        recipe=recipe,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
        cuda_graphs=args.cuda_graphs,
    )
    where = machine(args.device)
    if args.path:  # built once, before any point: every pruned N=1 point is one of its levels
        t0 = time.time()
        built = pipe.path()
        data["path"] = {
            "levels": [
                {
                    "level": lv.level,
                    "sparsity": lv.sparsity,
                    "metric": lv.metric,
                    "scored_on": lv.scored_on,
                    "steps": lv.steps,
                    "seconds": lv.seconds,
                }
                for lv in built
            ],
            "steps": sum(lv.steps for lv in built),
            "seconds": sum(lv.seconds for lv in built),  # as built, on the machine that built it
            "seconds_here": time.time() - t0,  # 0 for a cached path
            "machine": built[-1].machine,  # the one that built it (this one unless cached)
        }
        write_json(out, data)
    data.update(
        task=pipe.task.name,
        metric=pipe.task.metric,
        device=args.device,
        recipe=pipe.recipe.__dict__,
        throughput_config=tp.__dict__,
    )
    for s, n, p, k, c in todo:
        t0 = time.time()
        config = Candidate(
            sparsity=s,
            mux=n,
            mux_variant=pipe.mux_variant,
            precision=p,
            mux_layers=k,
            mux_combiner=c,
        )
        ev = pipe.evaluate(config, throughput=tp)
        # the N=1 model's shape: enough to time it again on another machine (`retime.py`)
        shape = pipe.fp32_model(config).encoder.config.to_dict() if n == 1 else None
        data["baseline"] = {"metric": ev.baseline.metric}
        held = ev.validation_noise
        data["rows"].append(
            {
                "target_sparsity": s,
                "n": n,
                "precision": p,
                "mux_layers": k,
                "combiner": c,
                "sparsity": ev.candidate.sparsity,
                "metric": ev.candidate.metric,
                "accuracy_loss": ev.accuracy_loss,  # on dev
                "accuracy_loss_se": ev.accuracy_loss_se,
                "validation_loss": ev.validation_loss,
                "validation_loss_se": ev.validation_loss_se,
                # the held-out split that chose: "validation", or "validation+stopping" for a
                # model that trained nothing of its own (`pipeline._baseline.choosing_split`)
                "validation_split": None if held is None else held.split,
                "validation_examples": None if held is None else held.examples,
                "selection_loss": ev.selection_loss,  # what a search chooses on
                "throughput": ev.candidate.throughput,
                "baseline_throughput": ev.baseline.throughput,
                "speedup": ev.speedup,
                "ideal_speedup": ev.ideal_speedup,
                "seconds": time.time() - t0,
                "machine": where,
                "encoder": shape,
            }
        )
        write_json(out, data)
        print(
            f"{config.describe()} {p}: loss {ev.accuracy_loss:.2f}, speedup {ev.speedup:.2f}x "
            f"({time.time() - t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    return 0


def point(row: dict) -> tuple[float, int, str, int, str]:
    """(target sparsity, N, precision, mux layers, combiner) of a row (rows measured before a
    field existed have its default)."""
    return (
        row["target_sparsity"],
        row["n"],
        row.get("precision", "fp32"),
        row.get("mux_layers", 0),
        row.get("combiner", "binding"),
    )


def label(row: dict) -> str:
    """A row's configuration in words, e.g. "s=0.5 N=2 k=2 concat fp32"."""
    s, n, p, k, c = point(row)
    late = f" k={k} {c}" if n > 1 and (k or c != "binding") else ""
    return f"s={s:g} N={n}{late} {p}"


def markdown_table(data: dict) -> str:
    """The grid's points, sorted by N then sparsity, as a markdown table."""
    base = data.get("baseline", {}).get("metric")
    lines = [
        f"baseline {data.get('metric', 'metric')}: " + (f"{base:.2f}" if base is not None else "-"),
        "",
        "| N | k | combiner | precision | target s | measured s | metric | loss | speedup | ideal | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(data["rows"], key=lambda r: (point(r)[2], r["n"], *point(r)[3:], point(r)[0]))
    for r in order:
        _, _, p, k, c = point(r)
        lines.append(
            f"| {r['n']} | {k} | {c} | {p} | {r['target_sparsity']:g} | {r['sparsity']:.3f} | "
            f"{r['metric']:.2f} | "
            f"{r['accuracy_loss']:.2f} | {r['speedup']:.2f}x | {r['ideal_speedup']:.2f}x | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
