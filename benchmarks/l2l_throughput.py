"""Examples per second: the standard loop against the L2L executor, at equal batch and at the
largest batch each fits under one device-memory cap, with a profile of one L2L step.

    python benchmarks/l2l_throughput.py --device cuda --cap-gb 8      # a 24-layer BERT-base
    OMP_NUM_THREADS=2 python benchmarks/l2l_throughput.py --depth 2 --width 64 --heads 2 \\
        --ffn 128 --max-batch 64 --steps 1                              # a CPU dry run

The model is `l2l_memory.py`'s random encoder (default: 24 layers, 768 hidden, 12 heads, 3072
FFN units, 128-token sequences, dropout 0.1, frozen word embeddings, AdamW, clipping at 1.0).

1. **Cap.** On CUDA the process may allocate at most `--cap-gb` GiB
   (`torch.cuda.set_per_process_memory_fraction`), so that the standard loop runs out of memory
   at a batch L2L still trains.
2. **Largest batch.** For each trainer the batch doubles from `--min-batch` until a step raises
   `torch.OutOfMemoryError` (or `--max-batch`); the largest batch that ran is kept. L2L runs
   micro-batches of `--micro-batch-size` examples, its boundary activations stashed on the host
   (`stash="host"`, so that its device memory depends on neither the depth nor the batch), and
   clips with the previous step's norm (`--l2l-clip previous`, the overlapped choice; see the L2L
   trainer's doc).
3. **Throughput**: the median of `--steps` timed steps (after one warm-up step) of each trainer at
   its largest batch, and of both at the standard loop's largest batch, interleaved.
4. **Profile** (CUDA): `torch.profiler` over one L2L step at the standard loop's largest batch:
   device time in host-to-device and device-to-host copies and in kernels, the host optimizer
   steps' time, the step's wall time, and how much of the copy time was hidden behind compute
   (copies + kernels - the device's busy span, clipped at 0).

Targets (issue "L2L that pays for itself"): at equal batch L2L at most 1.5x slower per example;
under the cap L2L at least 1.2x the standard loop's examples per second. JSON:
benchmarks/results/l2l_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from _results import write_json
from l2l_memory import Standard, build, make_batch, sync

from autoprumux.training import L2LExecutor, TrainConfig

GB = 2**30

Trainer = Standard | L2LExecutor


def make_trainer(name: str, base, args: argparse.Namespace, batch: int, device) -> Trainer:
    micro = max(1, batch // args.micro_batch_size)
    cfg = TrainConfig(
        steps=1000,
        batch_size=batch,
        trainer="l2l" if name == "l2l" else "standard",
        micro_batches=micro if name == "l2l" else 1,
        stash="host",
        l2l_clip=args.l2l_clip,
    )
    if name == "standard":
        return Standard(copy.deepcopy(base), cfg, device)
    return L2LExecutor(copy.deepcopy(base), cfg, device=device)


def free(trainer: Trainer | None, device: torch.device) -> None:
    if isinstance(trainer, L2LExecutor):
        trainer.close()
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fits(name: str, base, args, batch: int, device) -> bool:
    """Whether two steps of `name` at `batch` run without running out of device memory."""
    trainer = None
    try:
        trainer = make_trainer(name, base, args, batch, device)
        data = make_batch(replace_batch(args, batch))
        for _ in range(2):
            trainer.step(data)
        sync(device)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        free(trainer, device)


def replace_batch(args: argparse.Namespace, batch: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "batch": batch})


def largest_batch(name: str, base, args, device) -> int | None:
    b, best = args.min_batch, None
    while b <= args.max_batch:
        t0 = time.perf_counter()
        ok = fits(name, base, args, b, device)
        print(
            f"{name} batch {b}: {'fits' if ok else 'out of memory'} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        if not ok:
            break
        best, b = b, b * 2
    return best


def timed(runs: Mapping[str, tuple[Callable[[], object], int]], steps: int, device) -> dict:
    """Median seconds per step and examples/second of each run, interleaved."""
    for fn, _ in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(steps):
        for name, (fn, _) in runs.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, (_, batch) in runs.items():
        s = statistics.median(times[name])
        out[name] = {"batch": batch, "seconds_per_step": s, "examples_per_second": batch / s}
    return out


def profile_step(ex: L2LExecutor, data: dict, device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        ex.step(data)
        sync(device)
        wall = time.perf_counter() - t0
    h2d = d2h = kernels = host_steps = 0.0
    spans: list[tuple[float, float]] = []
    for e in prof.events():
        dev_us = getattr(e, "device_time", 0.0) or 0.0
        name = e.name
        if "Optimizer.step" in name:
            host_steps += e.cpu_time
        if dev_us <= 0 or getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        if "HtoD" in name:
            h2d += dev_us
        elif "DtoH" in name:
            d2h += dev_us
        else:
            kernels += dev_us
        start = e.time_range.start
        spans.append((start, start + dev_us))
    busy, end = 0.0, -1.0
    for a, b in sorted(spans):  # the union of the device's busy intervals
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    ms = 1e-3
    return {
        "wall_ms": wall * 1e3,
        "h2d_ms": h2d * ms,
        "d2h_ms": d2h * ms,
        "kernels_ms": kernels * ms,
        "host_optimizer_ms": host_steps * ms,
        "device_busy_ms": busy * ms,
        "copy_hidden_ms": max(0.0, (h2d + d2h + kernels - busy) * ms),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--depth", type=int, default=24)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--cap-gb", type=float, default=8.0, help="CUDA memory cap (GiB)")
    ap.add_argument("--min-batch", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--micro-batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per trainer")
    ap.add_argument("--l2l-clip", default="previous", choices=["global", "stage", "previous"])
    ap.add_argument("--train-word-embeddings", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is available")
    t_start = time.perf_counter()
    if cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gb * GB / total), device)
    base = build(args.depth, args)
    largest = {name: largest_batch(name, base, args, device) for name in ("standard", "l2l")}
    if largest["standard"] is None or largest["l2l"] is None:
        raise SystemExit(f"a trainer fits no batch from {args.min_batch}: {largest}")
    b_std, b_l2l = largest["standard"], largest["l2l"]
    trainers = {
        "standard": make_trainer("standard", base, args, b_std, device),
        "l2l_equal": make_trainer("l2l", base, args, b_std, device),
    }
    data_std = make_batch(replace_batch(args, b_std))
    runs = {
        "standard": (lambda: trainers["standard"].step(data_std), b_std),
        "l2l_equal": (lambda: trainers["l2l_equal"].step(data_std), b_std),
    }
    equal = timed(runs, args.steps, device)
    equal_l2l = trainers["l2l_equal"]
    assert isinstance(equal_l2l, L2LExecutor)
    profile = profile_step(equal_l2l, data_std, device) if cuda else None
    free(trainers.pop("l2l_equal"), device)
    trainers["l2l_largest"] = make_trainer("l2l", base, args, b_l2l, device)
    data_l2l = make_batch(replace_batch(args, b_l2l))
    capped = timed(
        {
            "standard": (lambda: trainers["standard"].step(data_std), b_std),
            "l2l_largest": (lambda: trainers["l2l_largest"].step(data_l2l), b_l2l),
        },
        args.steps,
        device,
    )
    for t in list(trainers.values()):
        free(t, device)
    per_example = (
        equal["standard"]["examples_per_second"] / equal["l2l_equal"]["examples_per_second"]
    )
    gain = capped["l2l_largest"]["examples_per_second"] / capped["standard"]["examples_per_second"]
    print(
        f"largest batch: standard {b_std}, L2L {b_l2l}; at batch {b_std} L2L is "
        f"{per_example:.2f}x slower per example (target <= 1.5x); largest batches: L2L "
        f"{gain:.2f}x the standard loop's examples/s (target >= 1.2x)"
    )
    if profile:
        print("profile of one L2L step:", profile)
    out = Path(args.out or f"benchmarks/results/l2l_throughput_{device.type}.json")
    write_json(
        out,
        {
            "args": vars(args),
            "largest_batch": largest,
            "equal_batch": equal,
            "largest_batches": capped,
            "l2l_slowdown_per_example_at_equal_batch": per_example,
            "l2l_throughput_gain_at_largest_batches": gain,
            "profile": profile,
            "seconds": time.perf_counter() - t_start,
            "meta": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "machine": platform.machine(),
                "cuda_device": torch.cuda.get_device_name(device) if cuda else None,
            },
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
