"""Does multi-fidelity promotion pay on the pruning path? Replayed on measured snapshots.

    python benchmarks/fidelity_replay.py \
        --bare benchmarks/results/path_stop_sst2_cpu.json \
        --recovered benchmarks/results/path_stop_snapshot_r1000_sst2_cpu.json \
        --precision ov-int8 --budgets 0.5 1 2 3 5 --orders 20 \
        --out benchmarks/results/fidelity_replay_sst2_cpu.json

Two fidelities of each path snapshot, both measured by benchmarks/frontier.py on one machine
against one baseline: rung 0, the bare snapshot (converted, scored, timed: `--bare`), and rung
1, the same snapshot recovered further at its shape (`snapshot_recovery_steps`: `--recovered`).
A snapshot measured at rung 0 only stays there. Each strategy spends seconds (the rows' own
build-and-measure times) and answers each budget with the fastest point it measured whose loss
that chooses (validation + one standard error, `autoprumux._selection`) is within the budget;
the answer's dev loss is reported, never chosen on:

- `bare`: rung 0 everywhere (the cheap end);
- `recover-all`: rung 0 and rung 1 everywhere (the expensive end);
- `halving-eta2`, `halving-eta3`: Optuna's `SuccessiveHalvingPruner` (reduction factor 2, 3)
  over the snapshots as trials, in `--orders` seeded orders: each reports its rung-0 value, is
  recovered only if the pruner promotes it, then reports its rung-1 value. A trial's value is
  the constrained objective at that rung: its speedup within the budget, else minus its
  excess (below every feasible one);
- `hyperband`: Optuna's `HyperbandPruner` over the same two rungs, in the same orders;
- `promote-near-misses`: the budget's own promotion, as the guided sampler reasons: after rung
  0, only snapshots faster than rung 0's answer can change it; with loss monotone in
  sparsity, bisect them at rung 1 (a recovered miss rules out every sparser one).

Each strategy's cost is reported beside `recover-all`'s, and its answers beside the fastest
within-budget point of everything measured (regret, as benchmarks/search_regret.py defines it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _results import write_json

from autoprumux._selection import selection_loss

BUDGETS = (0.5, 1.0, 2.0, 3.0, 5.0)


@dataclass(frozen=True)
class Point:
    """One snapshot measured at one rung."""

    sparsity: float
    rung: int
    selection: float  # the loss that chooses
    dev_loss: float
    speedup: float
    seconds: float


def load(path: str, precision: str, rung: int) -> tuple[dict[float, Point], dict[str, Any]]:
    doc = json.loads(Path(path).read_text())
    points = {}
    for r in doc["rows"]:
        if r["precision"] != precision or r.get("n", 1) != 1 or r["target_sparsity"] == 0:
            continue
        points[r["target_sparsity"]] = Point(
            r["target_sparsity"],
            rung,
            selection_loss(
                r["accuracy_loss"], r.get("validation_loss"), r.get("validation_loss_se")
            ),
            r["accuracy_loss"],
            r["speedup"],
            r["seconds"],
        )
    return points, doc


def check_same_run(bare: dict[str, Any], recovered: dict[str, Any]) -> None:
    """Both files must hold one machine's rows against one baseline (else their losses and
    speedups do not compare)."""
    machines = {r["machine"] for doc in (bare, recovered) for r in doc["rows"]}
    if len(machines) > 1:
        raise SystemExit(f"the files were measured on {len(machines)} machines: {sorted(machines)}")
    if bare["baseline"]["metric"] != recovered["baseline"]["metric"]:
        raise SystemExit(
            f"the files hold two baselines ({bare['baseline']['metric']:.2f} and "
            f"{recovered['baseline']['metric']:.2f}); measure both against one"
        )


def answer(measured: list[Point], budget: float) -> Point | None:
    """The fastest measured point within `budget` on the loss that chooses (None: the
    baseline)."""
    ok = [p for p in measured if p.selection <= budget]
    return max(ok, key=lambda p: p.speedup) if ok else None


def value(p: Point, budget: float) -> float:
    """The constrained objective at a rung: the speedup within the budget, else minus the
    excess (below every feasible value)."""
    return p.speedup if p.selection <= budget else -(p.selection - budget)


def optuna_replay(
    pruner: Any, order: list[float], rungs: list[dict[float, Point]], budget: float, step: int
) -> list[Point]:
    """What one Optuna study measures: each snapshot a trial, its rung-0 value reported at step
    1, its rung-1 value at `step` (the pruner's next rung) only if the pruner promotes it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    measured: list[Point] = []
    for s in order:
        trial = study.ask()
        low = rungs[0][s]
        measured.append(low)
        trial.report(value(low, budget), 1)
        high = rungs[1].get(s)
        if high is None or trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        measured.append(high)
        trial.report(value(high, budget), step)
        study.tell(trial, value(high, budget))
    return measured


def promote_near_misses(rungs: list[dict[float, Point]], budget: float) -> list[Point]:
    """Rung 0 everywhere, then a bisection at rung 1 over the snapshots faster than rung 0's
    answer (only they can change it), a recovered miss ruling out every sparser one."""
    measured = list(rungs[0].values())
    first = answer(measured, budget)
    floor = first.speedup if first else 1.0
    open_ = sorted(s for s, p in rungs[0].items() if p.speedup > floor and s in rungs[1])
    while open_:
        s = open_[len(open_) // 2]
        p = rungs[1][s]
        measured.append(p)
        if p.selection <= budget:
            open_ = [o for o in open_ if o > s]
        else:
            open_ = [o for o in open_ if o < s]
    return measured


def summary(measured: list[Point], budget: float, best: Point | None) -> dict[str, Any]:
    got = answer(measured, budget)
    best_speed = best.speedup if best else 1.0
    speed, dev = (got.speedup, got.dev_loss) if got else (1.0, 0.0)  # None: the baseline
    return {
        "answer": None if got is None else f"s={got.sparsity:g} rung {got.rung}",
        "speedup": speed,
        "dev_loss": dev,
        "dev_within_budget": dev <= budget,
        "regret": 1.0 - speed / best_speed,
        "seconds": sum(p.seconds for p in measured),
        "recoveries": sum(p.rung == 1 for p in measured),
    }


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several orders' summaries as one: means, the worst regret, and how many answers were
    within the budget on dev."""
    n = len(runs)
    return {
        "speedup": sum(r["speedup"] for r in runs) / n,
        "regret": sum(r["regret"] for r in runs) / n,
        "regret_max": max(r["regret"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs) / n,
        "recoveries": sum(r["recoveries"] for r in runs) / n,
        "dev_within_budget": f"{sum(r['dev_within_budget'] for r in runs)}/{n}",
        "answers": sorted({str(r["answer"]) for r in runs}),
    }


def replay(
    rungs: list[dict[float, Point]], budgets: list[float], orders: int
) -> dict[str, dict[str, Any]]:
    import optuna

    pruners = {
        "halving-eta2": (lambda: optuna.pruners.SuccessiveHalvingPruner(1, 2), 2),
        "halving-eta3": (lambda: optuna.pruners.SuccessiveHalvingPruner(1, 3), 3),
        "hyperband": (lambda: optuna.pruners.HyperbandPruner(1, 3, 3), 3),
    }
    everything = [*rungs[0].values(), *rungs[1].values()]
    out: dict[str, dict[str, Any]] = {}
    for budget in budgets:
        best = answer(everything, budget)
        row = {
            "bare": summary(list(rungs[0].values()), budget, best),
            "recover-all": summary(everything, budget, best),
            "promote-near-misses": summary(promote_near_misses(rungs, budget), budget, best),
        }
        for name, (make, step) in pruners.items():
            runs = []
            for seed in range(orders):
                order = sorted(rungs[0])
                random.Random(seed).shuffle(order)
                runs.append(
                    summary(optuna_replay(make(), order, rungs, budget, step), budget, best)
                )
            row[name] = mean_of(runs)
        out[f"{budget:g}"] = row
    return out


def markdown(result: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| budget | strategy | speedup | regret | dev within budget | recoveries | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget, row in result.items():
        for name, r in row.items():
            within = r["dev_within_budget"]
            within = ("yes" if within else "no") if isinstance(within, bool) else within
            lines.append(
                f"| {budget} | {name} | {r['speedup']:.2f}x | {100 * r['regret']:.1f}% | "
                f"{within} | {r['recoveries']:g} | {r['seconds']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bare", required=True, help="frontier.py --path results: bare snapshots")
    ap.add_argument(
        "--recovered", required=True, help="the same path's snapshots with snapshot_recovery_steps"
    )
    ap.add_argument("--precision", default="ov-int8")
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    ap.add_argument("--orders", type=int, default=20, help="seeded trial orders per pruner")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.orders < 1:
        ap.error(f"--orders must be >= 1, got {args.orders}")
    bare, bare_doc = load(args.bare, args.precision, 0)
    recovered, recovered_doc = load(args.recovered, args.precision, 1)
    check_same_run(bare_doc, recovered_doc)
    if not bare:
        raise SystemExit(f"{args.bare} holds no pruned {args.precision} row; pass --precision")
    missing = sorted(set(recovered) - set(bare))
    if missing:
        raise SystemExit(
            f"{args.recovered} recovered sparsities {missing} that {args.bare} did not measure "
            "bare; measure them bare too (frontier.py --path --sparsities ...)"
        )
    result = replay([bare, recovered], args.budgets, args.orders)
    print(markdown(result))
    if args.out:
        doc = {
            "bare": args.bare,
            "recovered": args.recovered,
            "precision": args.precision,
            "orders": args.orders,
            "machine": bare_doc["rows"][0]["machine"],
            "snapshot_recovery_steps": recovered_doc["recipe"].get("snapshot_recovery_steps"),
            "budgets": result,
        }
        print(f"wrote {write_json(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
