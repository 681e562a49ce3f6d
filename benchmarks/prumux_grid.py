"""PruMUX grid on a real model: sparsity x N, accuracy loss and speedup against the baseline.

    python benchmarks/prumux_grid.py --task sst2 --sparsities 0 0.5 0.7 0.9 --mux 1 2 4

Trained models come from the artefact cache (built on the first run). All throughputs are
measured in this one process, side by side, on identical inputs; the plain `transformers`
AutoModelForSequenceClassification is timed on the same batch to check our N=1 path is not slower.
Prints a markdown table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from autoprumux.evaluation import ThroughputConfig, measure_throughput, time_callable
from autoprumux.pipeline import PruMuxPipeline, Recipe


def hf_throughput(
    pipe: PruMuxPipeline, batch: dict[str, torch.Tensor], tp: ThroughputConfig
) -> float:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    m = (
        AutoModelForSequenceClassification.from_pretrained(
            pipe.base.path, num_labels=pipe.task.num_labels
        )
        .to(tp.device)
        .eval()
    )
    b = {k: v.to(tp.device) for k, v in batch.items()}
    res = time_callable(lambda: m(**b).logits, examples=b["input_ids"].shape[0], cfg=tp)
    return res.examples_per_second


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
            m = pipe.candidate(s, n)
            built[(s, n)] = (m, pipe.dev_metrics(m))
            print(
                f"built s={s} N={n}: {built[(s, n)][1]['metric']:.2f} ({time.time() - t0:.0f}s)",
                file=sys.stderr,
                flush=True,
            )

    # 2) throughput side by side in this process
    batch = pipe.throughput_batch(tp)
    hf_tp = hf_throughput(pipe, batch, tp)
    base_meas = pipe.measure("baseline", base, tp, base_metrics)
    rows = []
    for (s, n), (m, met) in built.items():
        meas = pipe.measure(f"s={s:g},N={n}", m, tp, met)
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
    own_n1 = measure_throughput(base, batch, tp).examples_per_second
    result = {
        "task": pipe.task.name,
        "metric": pipe.task.metric,
        "device": args.device,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "recipe": pipe.recipe.__dict__,
        "throughput_config": tp.__dict__,
        "baseline": {"metric": base_meas.metric, "throughput": base_meas.throughput},
        "hf_auto_model_throughput": hf_tp,
        "own_n1_throughput_repeat": own_n1,
        "rows": rows,
        "seconds": time.time() - t0,
    }
    out = Path(args.out or f"benchmarks/results/prumux_grid_{pipe.task.name}_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    m = pipe.task.metric
    print(
        f"\nbaseline {m} {base_meas.metric:.2f}, {base_meas.throughput:.1f} ex/s; "
        f"plain transformers AutoModelForSequenceClassification {hf_tp:.1f} ex/s "
        f"(ours/HF = {base_meas.throughput / hf_tp:.2f}x, repeat {own_n1 / hf_tp:.2f}x)\n"
    )
    print(
        f"| sparsity (target) | counted | N | dev {m} | acc. loss | ex/s | speedup | FLOP-ideal | layers |"
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
