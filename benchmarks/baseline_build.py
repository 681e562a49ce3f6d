"""The baseline autoprumux trains when the user brings no classifier: its dev score, how it
stopped, and how long it took to build on this machine.

    python benchmarks/baseline_build.py                        # SST-2, the default recipe
    python benchmarks/baseline_build.py --task mrpc
    python benchmarks/baseline_build.py --recipe batching=random train_autocast=fp32

The default recipe trains on all training examples less the validation split (10%, at most
2,000, stratified, fixed seed), evaluates the validation metric every `eval_every` steps and
stops after `patience` evaluations without a gain (at most `finetune_steps`), keeping the best
weights. The build runs in a fresh cache (`--cache-dir`, default a new temporary folder) so it
is timed whole; the dev set only reports. JSON: benchmarks/results/baseline_<task>_cpu.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _results import RECIPE_HELP, machine, recipe_overrides, write_json

from autoprumux import PruMuxPipeline, Recipe

# public all-MiniLM-L6 / MiniLM-L6 fine-tunes on GLUE dev, for the reader's yardstick
PUBLIC_REFERENCES = {"sst2": "88.3-91.5 (public MiniLM-L6 SST-2 classifiers)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument(
        "--data-dir", default=str(Path(__file__).parents[2] / "shared" / "data" / "glue")
    )
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--cache-dir", default=None, help="default: a new temporary folder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    cache = args.cache_dir or tempfile.mkdtemp(prefix="autoprumux-baseline-")
    t0 = time.perf_counter()
    pipe = PruMuxPipeline(
        task=args.task,
        recipe=Recipe(**recipe_overrides(args.recipe)),
        data_dir=args.data_dir,
        cache_dir=cache,
    )
    prepared = time.perf_counter() - t0
    print(pipe.max_seq_len_note)
    print(pipe.validation_note)
    print(f"training: {pipe.recipe.batching} batches, {pipe.train_autocast} forward", flush=True)
    t1 = time.perf_counter()
    pipe.baseline()
    trained = time.perf_counter() - t1
    dev = pipe.baseline_metrics()
    noise = pipe.dev_noise()
    stopping = pipe.baseline_training()
    print(noise.describe())
    if stopping is not None:
        from autoprumux.training import describe_convergence

        print(describe_convergence(stopping, pipe.task.metric))
    print(f"built in {trained / 60:.1f} min (+{prepared:.0f} s loading and tokenising)")
    doc = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "command": "python benchmarks/baseline_build.py --task "
        + args.task
        + (" --recipe " + " ".join(args.recipe) if args.recipe else ""),
        "task": args.task,
        "recipe": {
            k: getattr(pipe.recipe, k)
            for k in (
                "max_seq_len",
                "batch_size",
                "lr",
                "finetune_steps",
                "eval_every",
                "patience",
                "batching",
                "train_autocast",
            )
        },
        "train_autocast_resolved": pipe.train_autocast,
        "train_examples": len(pipe.train_items),
        "validation_examples": len(pipe.validation_items),
        "dev_examples": pipe.dev_size,
        "dev_metrics": dev,
        "dev_majority": noise.majority,
        "dev_standard_error": noise.standard_error,
        "stopping": stopping,
        "build_seconds": trained,
        "prepare_seconds": prepared,
        "public_reference": PUBLIC_REFERENCES.get(args.task),
    }
    out = args.out or Path(__file__).parent / "results" / f"baseline_{args.task}_cpu.json"
    print(f"wrote {write_json(out, doc)}")


if __name__ == "__main__":
    main()
