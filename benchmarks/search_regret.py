"""Issue 3 benchmark: how good are the recommendations for a given number of evaluated trials?

    python benchmarks/search_regret.py --grid benchmarks/results/reference_grid_sst2_cpu.json \
        --budgets 0.5 1 2 3 5 --evals 6 10 --seeds 5 [--study-storage sqlite:///autoprumux.db]

The reference grid (measured by benchmarks/reference_grid.py: every sparsity x N) is the ground
truth. For each budget and number of evaluations k, each strategy sees k grid points:
  tpe      Optuna TPE with the budget as constraint, best feasible trial after k trials
  random   Optuna random search, best feasible trial
  grid     a coarse grid of k points spread over the space, best feasible point
  meta     the LightGBM meta-model trained on the k random-search points, recommending over
           the whole grid (it may pick a point it never evaluated)
  meta-tpe the same meta-model trained on the k points TPE chose (what `autoprumux search`
           followed by `autoprumux recommend` does)
  guided   the budget-guided sampler (`autoprumux search --sampler guided`): dominance, bisection,
           then constrained expected improvement on the meta-model; best feasible trial. It stops
           early when no open point can beat its best trial, so it may use fewer than k
  meta-guided  the meta-model trained on the guided points, recommending over the whole grid
Regret = 1 - (true speedup of the choice) / (best feasible speedup in the full grid); a violation
is a choice whose measured loss exceeds the budget. Also: the meta-model's error on the grid
points it did not see, and (with --study-storage) the Optuna + MLflow overhead per trial of a real
search. Prints markdown; JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import optuna
from _results import write_json

from autoprumux.search._guided import Measured, propose
from autoprumux.search._meta import CONTEXT_KEYS, MetaModel, features


def load_grid(path: Path) -> tuple[list[dict], dict]:
    d = json.loads(path.read_text())
    rows = [
        {
            "sparsity": round(float(r["target_sparsity"]), 4),
            "mux": int(r["n"]),
            "loss": float(r["accuracy_loss"]),
            "speedup": float(r["speedup"]),
        }
        for r in d["rows"]
    ]
    task = d["task"]
    ctx = dict.fromkeys(CONTEXT_KEYS, 0.0)
    ctx.update(
        task_num_labels=3 if task == "qnli_" else 2,
        task_pair=int(task in ("mrpc", "qnli")),
        task_mcc=int(task == "cola"),
        task_log_train=math.log(8000),
        model_layers=6,
        model_hidden=384,
        model_log_params=math.log(1.78e7),
        device_cuda=int(str(d.get("device", "cpu")).startswith("cuda")),
        baseline_metric=float(d["baseline"]["metric"]),
    )
    return rows, ctx


def complete_rectangle(rows: list[dict]) -> tuple[list[dict], int]:
    """The points whose sparsity was measured for every N (the samplers search the product of
    sparsities and N), and how many were left out."""
    ns = {r["mux"] for r in rows}
    by_s: dict[float, set[int]] = {}
    for r in rows:
        by_s.setdefault(r["sparsity"], set()).add(r["mux"])
    keep = [r for r in rows if by_s[r["sparsity"]] == ns]
    return keep, len(rows) - len(keep)


def best_feasible(rows: list[dict], budget: float) -> dict | None:
    ok = [r for r in rows if r["loss"] <= budget]
    return max(ok, key=lambda r: r["speedup"]) if ok else None


def optuna_pick(rows: list[dict], k: int, budget: float, seed: int, kind: str) -> list[dict]:
    sp = sorted({r["sparsity"] for r in rows})
    ns = sorted({r["mux"] for r in rows})
    table = {(r["sparsity"], r["mux"]): r for r in rows}
    if kind == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(5, k)
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen = []
    for _ in range(k):
        t = study.ask()
        r = table[(t.suggest_categorical("sparsity", sp), t.suggest_categorical("mux", ns))]
        t.set_constraint("loss", r["loss"] - budget)
        study.tell(t, r["speedup"])
        seen.append(r)
    return seen


def guided_pick(rows: list[dict], k: int, budget: float) -> list[dict]:
    cands = [{"sparsity": r["sparsity"], "mux": r["mux"]} for r in rows]
    seen: list[tuple[dict, dict]] = []
    for _ in range(k):
        i = propose(cands, [Measured(c, r["loss"], r["speedup"]) for c, r in seen], budget)
        if i is None:
            break
        seen.append((cands[i], rows[i]))
    return [r for _, r in seen]


def coarse_grid(rows: list[dict], k: int) -> list[dict]:
    ns = sorted({r["mux"] for r in rows})
    sp = sorted({r["sparsity"] for r in rows})
    per_n = max(1, k // len(ns))
    idx = np.unique(np.linspace(0, len(sp) - 1, per_n).round().astype(int))
    pts = [r for r in rows if r["mux"] in ns and r["sparsity"] in {sp[i] for i in idx}]
    return pts[:k]


def meta_pick(
    seen: list[dict], rows: list[dict], ctx: dict, budget: float
) -> tuple[dict, dict[str, float]]:
    X = np.array([features(r, ctx) for r in seen])
    y = np.array([[r["loss"], r["speedup"]] for r in seen])
    m = MetaModel().fit(X, y)
    Xall = np.array([features(r, ctx) for r in rows])
    pred = m.predict(Xall)
    _, hi = m.predict_interval(Xall)
    measured = {(r["sparsity"], r["mux"]): r for r in seen}
    best, best_s = None, -1.0
    for i, r in enumerate(rows):
        meas = measured.get((r["sparsity"], r["mux"]))
        if r["sparsity"] == 0 and r["mux"] == 1:
            ok, s = True, (meas["speedup"] if meas else 1.0)
        elif meas is not None:
            ok, s = meas["loss"] <= budget, meas["speedup"]
        else:
            ok, s = hi[i, 0] <= budget, pred[i, 1]
        if ok and s > best_s:
            best, best_s = r, s
    unseen = [i for i, r in enumerate(rows) if (r["sparsity"], r["mux"]) not in measured]
    err = {
        "loss_mae": float(np.mean([abs(pred[i, 0] - rows[i]["loss"]) for i in unseen]))
        if unseen
        else 0.0,
        "speedup_mape": float(np.mean([abs(pred[i, 1] / rows[i]["speedup"] - 1) for i in unseen]))
        if unseen
        else 0.0,
    }
    assert best is not None
    return best, err


def overhead(storage: str) -> dict | None:
    fr = []
    for s in optuna.get_all_study_summaries(storage):
        st = optuna.load_study(study_name=s.study_name, storage=storage)
        for t in st.get_trials():
            ua = t.user_attrs
            if t.state.name == "COMPLETE" and ua.get("trial_seconds"):
                fr.append(ua["tracking_overhead_seconds"] / ua["trial_seconds"])
    if not fr:
        return None
    return {"trials": len(fr), "median": statistics.median(fr), "max": max(fr)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", required=True, type=Path)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1, 2, 3, 5])
    ap.add_argument("--evals", type=int, nargs="+", default=[6, 10])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--study-storage", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows, ctx = load_grid(args.grid)
    rows, dropped = complete_rectangle(rows)
    if dropped:
        print(
            f"note: {dropped} points left out so that every N has the same sparsities "
            "(the grid is not complete yet)",
            file=sys.stderr,
        )
    results = []
    for budget in args.budgets:
        truth = best_feasible(rows, budget)
        assert truth is not None
        for k in args.evals:
            acc: dict[str, list] = {
                s: []
                for s in ("tpe", "random", "grid", "meta", "meta-tpe", "guided", "meta-guided")
            }
            errs = []
            used: list[int] = []
            for seed in range(args.seeds):
                picks = {
                    "tpe": optuna_pick(rows, k, budget, seed, "tpe"),
                    "random": optuna_pick(rows, k, budget, seed, "random"),
                    "grid": coarse_grid(rows, k),
                    "guided": guided_pick(rows, k, budget),
                }
                used.append(len(picks["guided"]))
                for name, seen in picks.items():
                    b = best_feasible(seen, budget) or {"speedup": 1.0, "loss": 0.0}
                    acc[name].append(b)
                choice, err = meta_pick(picks["random"], rows, ctx, budget)
                acc["meta"].append(choice)
                errs.append(err)
                acc["meta-tpe"].append(meta_pick(picks["tpe"], rows, ctx, budget)[0])
                acc["meta-guided"].append(meta_pick(picks["guided"], rows, ctx, budget)[0])
            for name, chosen in acc.items():
                regrets = [1 - c["speedup"] / truth["speedup"] for c in chosen]
                results.append(
                    {
                        "budget": budget,
                        "evals": k,
                        "strategy": name,
                        "regret_mean": statistics.mean(regrets),
                        "regret_max": max(regrets),
                        "violations": sum(c["loss"] > budget for c in chosen),
                        "runs": len(chosen),
                        "evals_used": statistics.mean(used) if "guided" in name else k,
                        "best_speedup": truth["speedup"],
                    }
                )
            results.append(
                {
                    "budget": budget,
                    "evals": k,
                    "strategy": "meta-error",
                    "loss_mae": statistics.mean(e["loss_mae"] for e in errs),
                    "speedup_mape": statistics.mean(e["speedup_mape"] for e in errs),
                }
            )
    ov = overhead(args.study_storage) if args.study_storage else None
    out = Path(args.out or f"benchmarks/results/search_regret_{args.grid.stem}.json")
    write_json(out, {"grid": str(args.grid), "results": results, "overhead": ov})
    print(f"grid {args.grid} ({len(rows)} points), {args.seeds} seeds\n")
    print("| budget | evals | strategy | evals used | mean regret | max regret | violations |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if r["strategy"] == "meta-error":
            continue
        print(
            f"| {r['budget']:g} | {r['evals']} | {r['strategy']} | {r['evals_used']:g} | "
            f"{r['regret_mean']:.1%} | "
            f"{r['regret_max']:.1%} | {r['violations']}/{r['runs']} |"
        )
    print("\n| budget | evals | meta-model loss MAE (pts) | speedup MAPE |\n|---|---|---|---|")
    for r in results:
        if r["strategy"] == "meta-error":
            print(
                f"| {r['budget']:g} | {r['evals']} | {r['loss_mae']:.2f} | {r['speedup_mape']:.1%} |"
            )
    if ov:
        print(
            f"\nOptuna + MLflow overhead: median {ov['median']:.2%}, max {ov['max']:.2%} of trial "
            f"time over {ov['trials']} trials"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
