"""OpenVINO's runtime settings on the CPU (issue 41, item 4): which ones pay for a pruned model.

    python benchmarks/openvino_settings.py --task sst2 --sparsity 0.5 --cache-dir CACHE \
        [--preset quick] [--recipe FIELD=VALUE ...] [--precision ov-int8] [--threads 2] \
        [--batch 64] [--seq-len 128] [--repeats 10]

The N=1 model `Candidate(sparsity=s)` is built (or taken from --cache-dir) by the pipeline with
the --preset recipe and converted to --precision exactly as the search converts it
(`PruMuxPipeline.converted`: ONNX graph, NNCF static int8 calibrated on training texts). Its
graph is then compiled with each setting below and timed in the same interleaved rounds:

1. Throughput at --batch x --seq-len padded (the search's timing shape):
   - "threads": one inference stream on --threads threads (what the precision runs with);
   - "throughput hint": OpenVINO's PERFORMANCE_HINT THROUGHPUT (it picks the streams), the
     batch split into one sub-batch per stream and run through an AsyncInferQueue.
2. The whole dev set as `predict` runs it: in length-sorted batches of --batch, each padded to
   its own longest text (dynamic shapes, "padding-free"), against every batch padded to
   --seq-len (examples per second over the dev set; "threads" compile).
3. Latency at batch 1 x --seq-len: "threads" against PERFORMANCE_HINT LATENCY.

Every variant's logits on one batch are compared with the "threads" compile's (largest
difference). Results: benchmarks/results/openvino_settings_<task>_cpu.json (or --out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from _results import RECIPE_HELP, machine, recipe_overrides, write_json


def _median_seconds(fns: dict[str, Any], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each callable, in rotated interleaved rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--precision", choices=["ov-int8", "ov-fp32"], default="ov-int8")
    ap.add_argument("--preset", default="quick", help="the recipe preset (Recipe.preset)")
    ap.add_argument("--recipe", nargs="*", default=[], metavar="FIELD=VALUE", help=RECIPE_HELP)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import openvino as ov
    import torch

    from autoprumux import Candidate, PruMuxPipeline, Recipe
    from autoprumux.config import openvino_cpu_settings
    from autoprumux.data import pad

    torch.set_num_threads(args.threads)
    recipe = Recipe.preset(args.preset, **recipe_overrides(args.recipe))
    pipe = PruMuxPipeline(task=args.task, recipe=recipe, cache_dir=args.cache_dir)
    converted = pipe.converted(pipe.trained(Candidate(sparsity=args.sparsity)), args.precision)
    graph = converted.graph
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    compiled = {
        "threads": core.compile_model(graph, "CPU", openvino_cpu_settings(args.threads)),
        "throughput hint": core.compile_model(
            graph, "CPU", {**f32, "PERFORMANCE_HINT": "THROUGHPUT"}
        ),
        "latency hint": core.compile_model(graph, "CPU", {**f32, "PERFORMANCE_HINT": "LATENCY"}),
    }
    streams = int(compiled["throughput hint"].get_property("NUM_STREAMS"))
    names = [p.get_any_name() for p in compiled["threads"].inputs]

    def feed(items, length=None):
        arrays = pad(items, pad_to=length) if length else pad(items)
        return {k: arrays[k] for k in names}

    dev = sorted(pipe.dev_items, key=lambda x: len(x.input_ids))
    padded = feed(pipe.dev_items[: args.batch], args.seq_len)
    single = feed(pipe.dev_items[:1], args.seq_len)
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    queue = ov.AsyncInferQueue(compiled["throughput hint"], streams)
    parts = [
        {k: v[i::streams] for k, v in padded.items()} for i in range(streams)
    ]  # one sub-batch per stream

    def run_queue() -> None:
        for part in parts:
            queue.start_async(part)
        queue.wait_all()

    def dev_set(length: int | None) -> None:
        for s in range(0, len(dev), args.batch):
            requests["threads"].infer(feed(dev[s : s + args.batch], length))

    throughput = _median_seconds(
        {"threads": lambda: requests["threads"].infer(padded), "throughput hint": run_queue},
        args.repeats,
    )
    whole_dev = _median_seconds(
        {"padded to each batch's longest": lambda: dev_set(None),
         f"padded to {args.seq_len}": lambda: dev_set(args.seq_len)},
        max(3, args.repeats // 3),
    )  # fmt: skip
    latency = _median_seconds(
        {"threads": lambda: requests["threads"].infer(single),
         "latency hint": lambda: requests["latency hint"].infer(single)},
        args.repeats * 5,
    )  # fmt: skip
    ref = np.array(requests["threads"].infer(padded)[compiled["threads"].output(0)])
    diffs = {
        k: float(np.abs(np.array(requests[k].infer(padded)[c.output(0)]) - ref).max())
        for k, c in compiled.items()
    }
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "openvino": ov.__version__,
        "task": args.task,
        "sparsity": args.sparsity,
        "precision": args.precision,
        "recipe_preset": args.preset,
        "recipe_overrides": recipe_overrides(args.recipe),
        "shape": {"batch": args.batch, "seq_len": args.seq_len, "dev_examples": len(dev)},
        "throughput_hint_streams": streams,
        "throughput_examples_per_s": {k: args.batch / v for k, v in throughput.items()},
        "dev_set_examples_per_s": {k: len(dev) / v for k, v in whole_dev.items()},
        "batch1_latency_ms": {k: 1000 * v for k, v in latency.items()},
        "largest_logit_difference_from_threads": diffs,
    }
    path = args.out or f"benchmarks/results/openvino_settings_{args.task}_cpu.json"
    write_json(path, doc)
    print(f"written to {path}")
    for key in ("throughput_examples_per_s", "dev_set_examples_per_s", "batch1_latency_ms"):
        print(key, {k: round(v, 1) for k, v in doc[key].items()})
    print("streams (throughput hint):", streams, "logit differences:", diffs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
