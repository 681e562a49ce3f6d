"""A frontier's N=1 points timed again on this machine, from the shapes their rows record.

    python benchmarks/retime.py --from frontier_sst2_cpu.json --out frontier_sst2_here.json \
        [--tp-batch 64] [--tp-seq-len 128] [--tp-repeats 10] [--num-labels 2]
    python benchmarks/frontier.py --report --out frontier_sst2_here.json

A frontier (benchmarks/frontier.py, benchmarks/reference_grid.py) is trained, scored and timed on
one machine, often a GPU box; its speedups are that machine's. Every N=1 row records its model's
shape (`encoder`: the heads and FFN units each layer kept, which sub-layers remain), and a
model's latency depends only on its shapes and its precision, never on its weight values. So
each row's model is rebuilt here with random (seeded) weights of its shape, converted to its
precision as the pipeline converts it (int8: static, calibrated on random-token items), and
timed on this CPU beside an fp32 model of the baseline's shape (the row at sparsity 0, N=1,
fp32), all of them in the same interleaved rounds (`time_interleaved`) on one batch of random
token ids, --tp-batch x --tp-seq-len, every token attended.

The output is the input with each row's `speedup`, `throughput`, `baseline_throughput` and
`machine` this machine's; the values as scored stay under `speedup_as_scored` and
`machine_as_scored`, and the accuracy fields are kept as they are. The summaries derived from
the old speedups are dropped: `frontier.py --report` derives them again. A file whose rows
include N > 1 points is refused: a multiplexed row records no shape, and its mixing layers
would need one.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import torch
from _results import machine, write_json
from reference_grid import label, point

from autoprumux.config import DEVICE_PRECISIONS, OPENVINO_PRECISIONS
from autoprumux.data import Encoded
from autoprumux.evaluation import ThroughputConfig, fixed_batch, model_runner, time_interleaved
from autoprumux.models import (
    Encoder,
    EncoderConfig,
    MuxConfig,
    MuxSequenceClassifier,
    calibrate_int8,
    calibration_batches,
    to_openvino,
    to_precision,
)

SEED = 0
CALIBRATION_ITEMS = 64  # the ranges only set int8 scales, which do not change the speed
BASELINE = "baseline (fp32)"
# what frontier.py derives from the rows' speedups: stale once they change
DERIVED = ("best_within", "best_within_on_dev", "references", "int8_baseline", "pareto")


def random_items(vocab_size: int, max_len: int, count: int) -> list[Encoded]:
    """`count` training-like items: random token ids, lengths spread over 8..max_len."""
    rng = random.Random(SEED)
    items = []
    for _ in range(count):
        length = rng.randint(min(8, max_len), max_len)
        ids = tuple(rng.randrange(1, vocab_size) for _ in range(length))  # 0 is padding
        items.append(Encoded(input_ids=ids, token_type_ids=(0,) * length, label=0))
    return items


def model_of_shape(shape: dict, precision: str, num_labels: int, seq_len: int):
    """A classifier with the encoder `shape` describes (`EncoderConfig.to_dict`), random seeded
    weights, in eval mode and converted to `precision` as the pipeline converts it."""
    torch.manual_seed(SEED)
    encoder = Encoder(EncoderConfig.from_dict(shape))
    model = MuxSequenceClassifier(encoder, num_labels=num_labels, mux=MuxConfig(n=1)).eval()
    if precision not in ("int8", *OPENVINO_PRECISIONS):
        return to_precision(model, precision)
    items = random_items(encoder.config.vocab_size, seq_len, CALIBRATION_ITEMS)
    if precision in OPENVINO_PRECISIONS:  # as the pipeline converts: dynamic shapes
        limit = encoder.config.max_position_embeddings
        return to_openvino(
            model, precision, calibration_batches(items, seed=SEED), max_seq_len=limit
        )
    calibration = calibrate_int8(model, calibration_batches(items, seed=SEED))
    return to_precision(model, precision, calibration=calibration)


def refusal(data: dict, seq_len: int) -> str | None:
    """Why the rows of `data` cannot be timed again from their shapes (None when they can)."""
    rows = data.get("rows") or []
    multiplexed = [label(r) for r in rows if r["n"] > 1]
    if multiplexed:
        return (
            f"rows with N > 1 cannot be re-timed from a shape (their mixing layers record "
            f"none): {', '.join(multiplexed)}; keep only the N=1 rows"
        )
    shapeless = [label(r) for r in rows if not r.get("encoder")]
    if shapeless:
        return (
            f"rows without an `encoder` shape: {', '.join(shapeless)}; measure them again with "
            "benchmarks/reference_grid.py, which records it"
        )
    offered = DEVICE_PRECISIONS["cpu"]
    elsewhere = [label(r) for r in rows if point(r)[2] not in offered]
    if elsewhere:
        return f"rows in a precision this CPU does not offer ({offered}): {', '.join(elsewhere)}"
    base = [r for r in rows if point(r)[:3] == (0, 1, "fp32")]
    if not base:
        return "no baseline row (target sparsity 0, N=1, fp32): nothing to time the rows against"
    longest = base[0]["encoder"]["max_position_embeddings"]
    if seq_len > longest:
        return f"--tp-seq-len {seq_len} is over the model's {longest} positions"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--from", dest="source", required=True, help="the frontier JSON to re-time")
    ap.add_argument("--out", required=True, help="where the re-timed JSON goes")
    ap.add_argument("--tp-batch", type=int, default=64)
    ap.add_argument("--tp-seq-len", type=int, default=128)
    ap.add_argument("--tp-repeats", type=int, default=10)
    ap.add_argument("--num-labels", type=int, default=2, help="classes of the task's head")
    args = ap.parse_args(argv)

    source = Path(args.source)
    data = json.loads(source.read_text())
    why = refusal(data, args.tp_seq_len)
    if why:
        print(f"{source}: {why}", file=sys.stderr)
        return 2
    tp = ThroughputConfig(
        batch_size=args.tp_batch, seq_len=args.tp_seq_len, repeats=args.tp_repeats, device="cpu"
    )
    rows = data["rows"]
    base_shape = next(r for r in rows if point(r)[:3] == (0, 1, "fp32"))["encoder"]

    # one batch for every model: random ids, no padding (the mask's values do not change the
    # work, which is dense over all seq_len positions)
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(1, base_shape["vocab_size"], (tp.batch_size, tp.seq_len), generator=g)
    batch = fixed_batch(ids, torch.ones_like(ids), torch.zeros_like(ids), tp)

    print(f"building {len(rows)} models and the baseline", file=sys.stderr, flush=True)
    fns = {
        BASELINE: model_runner(
            model_of_shape(base_shape, "fp32", args.num_labels, tp.seq_len), batch, tp.device
        )
    }
    names = [f"{i}: {label(r)}" for i, r in enumerate(rows)]  # rows may repeat a point
    for name, r in zip(names, rows, strict=True):
        model = model_of_shape(r["encoder"], point(r)[2], args.num_labels, tp.seq_len)
        fns[name] = model_runner(model, batch, tp.device)
    print(
        f"timing {len(fns)} models in {tp.repeats} interleaved rounds", file=sys.stderr, flush=True
    )
    timed = time_interleaved(fns, cfg=tp)

    where = machine("cpu")
    out = copy.deepcopy(data)
    base_throughput = timed[BASELINE].examples_per_second
    print("| point | speedup as scored | speedup here |\n|---|---|---|")
    for name, r in zip(names, out["rows"], strict=True):
        # a file re-timed before keeps the figures of the machine that scored it
        r.setdefault("speedup_as_scored", r["speedup"])
        r.setdefault("machine_as_scored", r.get("machine"))
        throughput = timed[name].examples_per_second
        r.update(
            throughput=throughput,
            baseline_throughput=base_throughput,
            speedup=throughput / base_throughput,
            machine=where,
        )
        print(f"| {label(r)} | {r['speedup_as_scored']:.2f}x | {r['speedup']:.2f}x |")
    for key in DERIVED:
        out.pop(key, None)
    out.setdefault("throughput_config_as_scored", data.get("throughput_config"))
    out.setdefault("device_as_scored", data.get("device"))
    out.update(
        device="cpu",
        timed_on=where,
        retimed_from=str(source),
        throughput_config=tp.__dict__,
    )
    write_json(args.out, out)
    report = f"python benchmarks/frontier.py --report --out {args.out}"
    print(f"wrote {args.out}; its frontier: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
