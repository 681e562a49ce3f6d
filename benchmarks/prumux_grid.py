"""PruMUX grid on a real model: sparsity x N, accuracy loss and speedup against the baseline.

    python benchmarks/prumux_grid.py --task sst2 --sparsities 0 0.5 0.7 0.9 --mux 1 2 4

Trained models come from the artefact cache (built on the first run). All throughputs are
measured in this one process, side by side, on identical inputs; the plain `transformers`
AutoModelForSequenceClassification is timed on the same batch to check our N=1 path is not slower.
Prints a markdown table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _results import machine, write_json

from autoprumux.config import Candidate, Recipe
from autoprumux.evaluation import ThroughputConfig
from autoprumux.pipeline import PruMuxPipeline


def hf_runner(pipe: PruMuxPipeline, batch: dict[str, torch.Tensor], device: str):
    """Plain transformers AutoModelForSequenceClassification on the same batch: (callable, examples)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    m = AutoModelForSequenceClassification.from_pretrained(
        pipe.base.path, num_labels=pipe.task.num_labels
    )
    m = m.to(device).eval()
    b = {k: v.to(device) for k, v in batch.items()}
    return (lambda: m(**b).logits), b["input_ids"].shape[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    ap.add_argument("--mux", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tp-batch", type=int, default=64)
    ap.add_argument("--tp-seq-len", type=int, default=128)
    ap.add_argument("--tp-repeats", type=int, default=10)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument(
        "--out",
        default=None,
        help="JSON output (default benchmarks/results/prumux_grid_<task>_<device>.json)",
    )
    args = ap.parse_args(argv)

    t0 = time.time()
    pipe = PruMuxPipeline(
        task=args.task, recipe=Recipe(), device=args.device, cache_dir=args.cache_dir
    )
    tp = ThroughputConfig(
        batch_size=args.tp_batch,
        seq_len=args.tp_seq_len,
        repeats=args.tp_repeats,
        device=args.device,
    )
    base = pipe.baseline()
    base_metrics = pipe.dev_metrics(base)
    print(
        f"baseline dev {pipe.task.metric}: {base_metrics['metric']:.2f}",
        file=sys.stderr,
        flush=True,
    )

    # 1) build every candidate (cached) and measure its dev metric
    built = {}
    for n in args.mux:
        for s in args.sparsities:
            m = pipe.candidate(Candidate(sparsity=s, mux=n, mux_variant=pipe.mux_variant))
            built[(s, n)] = (m, pipe.dev_metrics(m))
            print(
                f"built s={s} N={n}: {built[(s, n)][1]['metric']:.2f} ({time.time() - t0:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

    # 2) throughput side by side in this process: interleaved rounds over every model, the
    #    baseline and the plain transformers model included, on identical inputs
    batch = pipe.throughput_batch(tp)
    models: dict[str, tuple[Any, dict[str, float] | None]] = {"baseline": (base, base_metrics)}
    models.update({f"s={s:g},N={n}": (m, met) for (s, n), (m, met) in built.items()})
    measured, others = pipe.measure_many(
        models, tp, {"transformers": hf_runner(pipe, batch, args.device)}
    )
    hf_tp = others["transformers"]
    base_meas = measured["baseline"]
    rows = []
    for s, n in built:
        meas = measured[f"s={s:g},N={n}"]
        rows.append(
            {
                "target_sparsity": s,
                "n": n,
                "sparsity": meas.sparsity,
                "metric": meas.metric,
                "accuracy_loss": base_meas.metric - meas.metric,
                "throughput": meas.throughput,
                "speedup": meas.throughput / base_meas.throughput,
                "ideal_speedup": base_meas.flops / meas.flops,
                "layers": meas.extra["layers"],
                "heads": meas.extra["heads"],
                "ffn": meas.extra["ffn"],
            }
        )
    result = {
        "task": pipe.task.name,
        "metric": pipe.task.metric,
        "device": args.device,
        "machine": machine(args.device),
        "recipe": pipe.recipe.__dict__,
        "throughput_config": tp.__dict__,
        "baseline": {"metric": base_meas.metric, "throughput": base_meas.throughput},
        "hf_auto_model_throughput": hf_tp,
        "rows": rows,
        "seconds": time.time() - t0,
    }
    out = Path(args.out or f"benchmarks/results/prumux_grid_{pipe.task.name}_{args.device}.json")
    write_json(out, result)

    metric_name = pipe.task.metric
    print(
        f"\nbaseline {metric_name} {base_meas.metric:.2f}, {base_meas.throughput:.1f} ex/s; "
        f"plain transformers AutoModelForSequenceClassification {hf_tp:.1f} ex/s "
        f"(ours/HF = {base_meas.throughput / hf_tp:.2f}x; the same N=1 model timed again as the "
        f"s=0,N=1 row: {measured.get('s=0,N=1', base_meas).throughput / hf_tp:.2f}x)\n"
    )
    print(
        f"| sparsity (target) | counted | N | dev {metric_name} | acc. loss | ex/s | speedup | FLOP-ideal | layers |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target_sparsity']:g} | {r['sparsity']:.3f} | {r['n']} | {r['metric']:.2f} | {r['accuracy_loss']:.2f} | "
            f"{r['throughput']:.1f} | {r['speedup']:.2f}x | {r['ideal_speedup']:.2f}x | {r['layers']} |"
        )
    print(f"\n({result['machine']}; {time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
