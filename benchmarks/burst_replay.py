"""Burst replay: fixed K against burst-adaptive K, served over loopback HTTP.

    python benchmarks/burst_replay.py --task sst2 --students 4 --depth 2

Builds (or takes from the cache) the K-student ensemble, measures each prefix k's dev accuracy
and profiles its throughput at the server's max batch on this machine (the operating points).
Rates are set from that profile: steady load at `--steady-frac` of K's capacity, a burst at
`--burst-x` times it (it should stay below k=1's capacity; a note says when it does not).
For each mode a fresh server starts in-process on 127.0.0.1 (ephemeral port) and the same
steady -> burst -> steady schedule is replayed open-loop with dev sentences of known labels.
Modes: `fixed-K` and `fixed-<k>` keep k constant; `adaptive` chooses from the measured table
(throughput and dev accuracy loss per k, dominated points dropped); `adaptive-all-k` from
throughput alone, taking more students as more accurate, so it uses every k up to K;
`adaptive+configs` from the table with each `--also` configuration added (e.g. a multiplexed
model, measured the same way), so under load it may switch to a model that multiplexes more
inputs per pass; `fixed-config` serves the first `--also` configuration alone.

    python benchmarks/burst_replay.py --task sst2 --students 4 --depth 2 \
        --also mux=2,mux_layers=3,mux_combiner=concat --modes fixed-K adaptive adaptive+configs
Prints a markdown table; JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _loadgen import LoadReport, burst_schedule, run_load
from _results import write_json

from autoprumux.cli._flags import parse_config
from autoprumux.config import Recipe
from autoprumux.pipeline import PruMuxPipeline
from autoprumux.student_server import (
    AdaptivePolicy,
    FixedPolicy,
    OperatingPoint,
    PointKey,
    PolicyConfig,
    ServingConfig,
    ServingPolicy,
    StudentServer,
    model_accuracy_losses,
    point_name,
    profile_operating_points,
    student_accuracy_losses,
)


def timeline_summary(report: LoadReport, limit: int = 6) -> str:
    """'k=4 -> k=1 @15.2s -> k=4 @33.0s' from the changes in what served the answers."""
    tl = report.serving_timeline
    if not tl:
        return "-"
    parts = [tl[0][1]] + [f"{name} @{t:.1f}s" for t, name in tl[1 : limit + 1]]
    more = len(tl) - 1 - limit
    return " -> ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def fmt(v: float, digits: int = 0) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # NaN -> "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--model", default=None, help="default: packaged all-MiniLM-L6-v2")
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--hold-s", type=float, default=2.0)
    ap.add_argument(
        "--max-batch", type=int, default=8, help="default 8: the fastest per example on the CPU"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--texts-per-request", type=int, default=4)
    ap.add_argument("--steady-frac", type=float, default=0.3, help="steady load / K's capacity")
    ap.add_argument("--burst-x", type=float, default=2.0, help="burst load / K's capacity")
    ap.add_argument("--steady-s", type=float, default=10.0)
    ap.add_argument("--burst-s", type=float, default=15.0)
    ap.add_argument("--after-s", type=float, default=20.0)
    ap.add_argument("--timeout-s", type=float, default=15.0, help="per request, from its due time")
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument(
        "--modes", nargs="+", default=["fixed-K", "adaptive", "adaptive-all-k", "fixed-1"]
    )
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="CONFIG",
        help="a configuration served beside the students (FIELD=VALUE,...), for the modes "
        "adaptive+configs and fixed-config",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--recipe",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="Recipe overrides (int fields), e.g. student_steps=400",
    )
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.recipe)}
    recipe = replace(Recipe(), **overrides)

    torch.set_num_threads(args.threads)
    t_start = time.time()
    pipe = PruMuxPipeline(task=args.task, model=args.model, recipe=recipe, cache_dir=args.cache_dir)
    big = args.students
    ens = pipe.students(big, args.depth)
    base = pipe.baseline_metrics()["metric"]
    configs = {c.describe(): c for c in map(parse_config, args.also)}
    models = {name: pipe.deployable(c) for name, c in configs.items()}
    t_built = time.time()
    losses = {**student_accuracy_losses(pipe, ens), **model_accuracy_losses(pipe, models)}
    dev = pipe.data.dev
    texts = [(e.text_a, e.text_b) if e.text_b is not None else e.text_a for e in dev]
    points = profile_operating_points(
        ens,
        pipe.tokenizer,
        texts[:256],
        models=models,
        max_batch=args.max_batch,
        max_seq_len=recipe.max_seq_len,
        repeats=10,
        accuracy_loss=losses,
    )
    cap_big, cap_one = points[big].examples_per_second, points[1].examples_per_second
    print(f"baseline {pipe.task.metric} {base:.2f}", file=sys.stderr)
    for p in points.values():
        print(
            f"{p.name}: {p.examples_per_second:.0f} ex/s, dev {base - (p.accuracy_loss or 0):.2f} "
            f"(loss {p.accuracy_loss:.2f}; chosen on {p.chosen_on}"
            + ("" if p.validation_loss is None else f", validation loss {p.validation_loss:.2f}")
            + ")",
            file=sys.stderr,
        )
    tpr = args.texts_per_request
    burst_x, slo_ms = args.burst_x, args.slo_ms
    steady_ex, burst_ex = args.steady_frac * cap_big, burst_x * cap_big
    if burst_ex >= cap_one:
        print(
            f"note: the burst ({burst_ex:.0f} ex/s) is above what k=1 serves ({cap_one:.0f})",
            file=sys.stderr,
        )
    sched = burst_schedule(
        steady_rps=steady_ex / tpr,
        burst_rps=burst_ex / tpr,
        steady_s=args.steady_s,
        burst_s=args.burst_s,
        after_s=args.after_s,
        texts_per_request=tpr,
        request_timeout_s=args.timeout_s,
        concurrency=args.concurrency,
    )
    examples = [(t, e.label) for t, e in zip(texts, dev, strict=True)]
    serving = ServingConfig(
        port=0,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_seq_len=recipe.max_seq_len,
        request_timeout_s=args.timeout_s,
    )

    runs = []
    students_only: dict[PointKey, OperatingPoint] = {
        k: p for k, p in points.items() if isinstance(k, int)
    }
    for mode in args.modes:
        policy: ServingPolicy
        if mode in ("adaptive+configs", "fixed-config") and not configs:
            raise SystemExit(f"mode {mode} needs at least one --also configuration")
        if mode in ("adaptive", "adaptive-all-k", "adaptive+configs"):
            table: dict[PointKey, OperatingPoint] = (
                points
                if mode == "adaptive+configs"
                else students_only
                if mode == "adaptive"
                else {k: replace(p, accuracy_loss=None) for k, p in students_only.items()}
            )
            policy = AdaptivePolicy(table, PolicyConfig(slo_ms=slo_ms, hold_s=args.hold_s))
        elif mode == "fixed-config":
            policy = FixedPolicy(next(iter(configs)), points=points)
        elif mode.startswith("fixed-"):
            k = big if mode == "fixed-K" else int(mode.split("-", 1)[1])
            policy = FixedPolicy(k, points=points)
        else:
            raise SystemExit(
                f"unknown mode {mode!r}; use fixed-K, fixed-<k>, fixed-config, adaptive, "
                "adaptive-all-k or adaptive+configs"
            )
        server = StudentServer(
            ens, pipe.tokenizer, policy, models=models, config=serving, pair=pipe.task.pair
        )
        with server:
            report = run_load("127.0.0.1", server.port, examples, sched)
            stats = server.stats()
        runs.append({"mode": mode, "report": report, "server": stats})
        print(
            f"{mode}: p99 {report.p99_ms:.0f} ms, {report.examples_per_second:.0f} ex/s, "
            f"errors {report.errors}",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(2.0)  # let connection threads of the closed server wind down

    head = (
        "| mode | p50 ms | p99 ms | ex/s | burst p50 ms | burst p99 ms | burst ex/s "
        "| accuracy % | errors | served over time (answers) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in runs:
        rep: LoadReport = r["report"]
        burst = rep.phases[1]
        lines.append(
            f"| {r['mode']} | {fmt(rep.p50_ms)} | {fmt(rep.p99_ms)} | "
            f"{fmt(rep.examples_per_second)} | {fmt(burst.p50_ms)} | {fmt(burst.p99_ms)} | "
            f"{fmt(burst.examples_per_second)} | {fmt(rep.accuracy, 2)} | "
            f"{rep.error_count}/{rep.requests} | {timeline_summary(rep)} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    print(
        f"\n(K={big} students of depth {args.depth}, {args.task} dev sentences, {tpr} per "
        f"request; steady {steady_ex:.1f} ex/s for {args.steady_s:g} s, burst {burst_ex:.1f} "
        f"ex/s ({burst_x:.2f}x K's capacity) for {args.burst_s:g} s, steady {args.after_s:g} s; "
        f"objective {slo_ms:.0f} ms; "
        f"profiled capacity k={big} {cap_big:.1f} ex/s, k=1 {cap_one:.1f} ex/s)"
    )
    out = Path(args.out or f"benchmarks/results/burst_replay_{args.task}_cpu.json")
    write_json(
        out,
        {
            "task": args.task,
            "model": pipe.base.model_id,
            "students": big,
            "depth": args.depth,
            "baseline_metric": base,
            "configurations": {name: c.to_dict() for name, c in configs.items()},
            "operating_points": {point_name(k): p.to_dict() for k, p in points.items()},
            "schedule": {
                "phases": [
                    {"name": p.name, "rps": p.requests_per_second, "seconds": p.duration_s}
                    for p in sched.phases
                ],
                "texts_per_request": tpr,
                "request_timeout_s": args.timeout_s,
            },
            "serving": {
                "max_batch": args.max_batch,
                "max_wait_ms": args.max_wait_ms,
                "slo_ms": slo_ms,
                "hold_s": args.hold_s,
            },
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
            "seconds": {"build": t_built - t_start, "total": time.time() - t_start},
            "runs": [
                {"mode": r["mode"], "report": r["report"].to_dict(), "server": r["server"]}
                for r in runs
            ],
            "table": markdown,
        },
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
