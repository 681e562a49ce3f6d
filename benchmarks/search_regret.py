"""Regret of what a user gets from `autoprumux search` then `autoprumux recommend`, replayed
on a measured reference grid.

    python benchmarks/search_regret.py --grid benchmarks/results/reference_grid_sst2_cpu.json \
        --budgets 0.5 1 2 3 5 10 --trials 8 --samplers guided tpe random --seeds 3

For every budget, sampler and seed this runs the real search service: `Searcher` over the CLI's
own search space (`--space`, default search_spaces/prumux.yaml: sparsity 0 to 0.95 in steps of
0.05 x N in {1, 2, 4}), a real SQLite Optuna study, a real MLflow store, early stopping with
the CLI's default margin, and `--trials` trials (pruned and failed trials count). Only a trial's
evaluation is replayed: instead of training, it answers with the grid's measured loss and
speedup (linearly interpolated in sparsity between the grid's measured points for the space's
points in between; the unpruned N-way model's loss is reported at step 0, as the real pipeline
does, so hopeless trials are pruned as they would be). Then `recommend()`, the function the CLI
and the served model call, answers the budget from the study.

Regret = 1 - (grid speedup of the answer) / (best grid speedup within the budget over the whole
space, the baseline's 1.00x included); a violation is an answer whose grid loss exceeds the
budget. Prints markdown; JSON to benchmarks/results/search_regret_<grid>.json.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import machine, write_json

from autoprumux.config import Candidate
from autoprumux.evaluation import Evaluation, Measured, ThroughputConfig
from autoprumux.meta import recommend
from autoprumux.search import Searcher, SearchSettings, SearchSpace


class GridTable:
    """The reference grid's measured (loss, speedup) per (sparsity, N), interpolated linearly in
    sparsity between measured points of the same N."""

    def __init__(self, path: Path):
        d = json.loads(path.read_text())
        self.task: str = d["task"]
        self.device: str = str(d.get("device", "cpu"))
        self.baseline_metric = float(d["baseline"]["metric"])
        self.rows: dict[int, list[tuple[float, float, float]]] = {}
        for r in d["rows"]:
            if r.get("precision", "fp32") != "fp32":
                continue  # the search replays the fp32 grid
            self.rows.setdefault(int(r["n"]), []).append(
                (float(r["target_sparsity"]), float(r["accuracy_loss"]), float(r["speedup"]))
            )
        for pts in self.rows.values():
            pts.sort()

    def covers(self, sparsity: float, n: int) -> bool:
        pts = self.rows.get(n, [])
        return bool(pts) and pts[0][0] - 1e-9 <= sparsity <= pts[-1][0] + 1e-9

    def at(self, sparsity: float, n: int) -> tuple[float, float]:
        """(accuracy loss, speedup); the baseline is loss 0, 1.00x by definition."""
        if n == 1 and sparsity == 0.0:
            return 0.0, 1.0
        pts = self.rows[n]
        xs = [p[0] for p in pts]
        j = bisect.bisect_left(xs, sparsity - 1e-9)
        if j < len(xs) and abs(xs[j] - sparsity) < 1e-9:
            return pts[j][1], pts[j][2]
        lo, hi = pts[j - 1], pts[j]
        w = (sparsity - lo[0]) / (hi[0] - lo[0])
        return lo[1] + w * (hi[1] - lo[1]), lo[2] * (hi[2] / lo[2]) ** w


class ReplayEvaluator:
    """A trial evaluator (see `autoprumux.search.TrialEvaluator`) that answers from the grid."""

    def __init__(self, table: GridTable, dev_size: int, train_size: int, prune_stages: int):
        self.table = table
        self.model_id = "replay-all-MiniLM-L6-v2"
        self.dev_size = dev_size
        self.train_size = train_size
        self.prune_stages = prune_stages

    def descriptors(self) -> dict[str, float]:
        import math

        task = self.table.task
        return {
            "task_num_labels": 2,
            "task_pair": int(task in ("mrpc", "qnli")),
            "task_mcc": int(task == "cola"),
            "task_log_train": round(math.log(self.train_size), 6),
            "model_layers": 6,
            "model_hidden": 384,
            "model_log_params": round(math.log(1.78e7), 6),
            "device_cuda": int(self.table.device.startswith("cuda")),
        }

    def check_lengths(self, n: int, tp: ThroughputConfig | None = None) -> None:
        return None

    def baseline_metrics(self) -> dict[str, float]:
        m = self.table.baseline_metric
        return {"metric": m, "accuracy": m}

    def evaluate(
        self,
        config: Candidate,
        *,
        throughput: ThroughputConfig | None = None,
        on_stage: Any = None,
    ) -> Evaluation:
        sparsity, n = config.sparsity, config.mux
        base = self.table.baseline_metric
        if on_stage is not None and n > 1:
            on_stage(0, base - self.table.at(0.0, n)[0])
        loss, speed = self.table.at(sparsity, n)
        if on_stage is not None and sparsity > 0:
            on_stage(self.prune_stages, base - loss)
        return self._evaluation(sparsity, n, loss, speed, throughput)

    def evaluate_students(self, k: int, depth: int, *, throughput: Any = None) -> Evaluation:
        raise RuntimeError("the reference grids hold no students")

    def _evaluation(
        self, sparsity: float, n: int, loss: float, speed: float, tp: ThroughputConfig | None
    ) -> Evaluation:
        base = self.table.baseline_metric

        def measured(name: str, s: float, nn: int, metric: float, rate: float) -> Measured:
            # replayed: throughput relative to the baseline's 1.0, FLOPs as their inverse
            return Measured(name, s, nn, metric, metric, rate, 1.0 / rate, 0, 1.0 / rate)

        return Evaluation(
            task=self.table.task,
            metric_name="accuracy",
            device=self.table.device,
            baseline=measured("baseline", 0.0, 1, base, 1.0),
            candidate=measured(f"s={sparsity:g},N={n}", sparsity, n, base - loss, speed),
            throughput_config=tp or ThroughputConfig(),
        )


def dataset_sizes(task: str, max_train: int | None) -> tuple[int, int]:
    """(dev, train) sizes of the task as the pipeline loads them."""
    from autoprumux.data import load_task

    data = load_task(task, max_train_examples=max_train)
    return len(data.dev), len(data.train)


def run_one(
    space: SearchSpace,
    evaluator: ReplayEvaluator,
    work: Path,
    name: str,
    sampler: str,
    budget: float,
    trials: int,
    seed: int,
) -> dict[str, Any]:
    settings = SearchSettings(
        space=space,
        trials=trials,
        storage=f"sqlite:///{work / 'optuna.db'}",
        study_name=name,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        budget=budget,
        sampler=sampler,
        seed=seed,
        show_progress=False,
    )
    t0 = time.perf_counter()
    searcher = Searcher(settings, evaluator=lambda variant: evaluator)
    searcher.run()
    seconds = time.perf_counter() - t0
    states = [t.state.name for t in searcher.study.get_trials()]
    rec = recommend(budget, storage=settings.storage, study=name)
    loss, speed = evaluator.table.at(rec.sparsity, rec.mux)
    return {
        "answer": {"sparsity": rec.sparsity, "mux": rec.mux, "source": rec.source},
        "grid_loss": loss,
        "grid_speedup": speed,
        "evaluations": len(states),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "search_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", required=True, type=Path)
    ap.add_argument("--space", type=Path, default=Path("search_spaces/prumux.yaml"))
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1, 2, 3, 5, 10])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--samplers", nargs="+", default=["guided", "tpe", "random"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.getLogger("autoprumux").setLevel(logging.ERROR)
    logging.getLogger("autoprumux.search").setLevel(logging.ERROR)

    table = GridTable(args.grid)
    space = SearchSpace.from_yaml(args.space).with_task(table.task)
    if "precision" in space.params:  # the reference grids were measured in fp32
        fp32_only = space.to_dict()
        fp32_only["params"].pop("precision")
        space = SearchSpace.from_dict(fp32_only)
        print("the reference grid is fp32: the space's precision dimension is left out")
    grid = [c for c in space.grid() if c.technique == "prumux"]
    outside = [c for c in grid if not table.covers(c.sparsity, c.mux)]
    if outside:
        print(
            f"the space {args.space} has {len(outside)} configurations outside the grid "
            f"{args.grid} (e.g. {outside[0]}); measure them or narrow the space",
            file=sys.stderr,
        )
        return 2
    dev, train = dataset_sizes(table.task, space.recipe.max_train_examples)
    evaluator = ReplayEvaluator(table, dev, train, space.recipe.prune_stages)
    truth_points = [(c.sparsity, c.mux, *table.at(c.sparsity, c.mux)) for c in grid]

    results = []
    with tempfile.TemporaryDirectory(prefix="search-regret-") as d:
        work = Path(d)
        for budget in args.budgets:
            best = max(sp for s, n, loss, sp in truth_points if loss <= budget)
            for sampler in args.samplers:
                seeds = 1 if sampler == "guided" else args.seeds  # guided is deterministic
                runs = []
                for seed in range(seeds):
                    name = f"{sampler}-b{budget:g}-s{seed}"
                    r = run_one(space, evaluator, work, name, sampler, budget, args.trials, seed)
                    r["regret"] = 1.0 - r["grid_speedup"] / best
                    r["violation"] = r["grid_loss"] > budget + 1e-9
                    runs.append(r)
                    print(
                        f"budget {budget:g} {sampler} seed {seed}: answer "
                        f"s={r['answer']['sparsity']:g} N={r['answer']['mux']} "
                        f"({r['grid_speedup']:.2f}x, loss {r['grid_loss']:.2f}; best "
                        f"{best:.2f}x) regret {r['regret']:.1%}",
                        file=sys.stderr,
                        flush=True,
                    )
                results.append(
                    {
                        "budget": budget,
                        "sampler": sampler,
                        "trials": args.trials,
                        "best_speedup": best,
                        "regret_mean": statistics.mean(r["regret"] for r in runs),
                        "regret_max": max(r["regret"] for r in runs),
                        "violations": sum(r["violation"] for r in runs),
                        "runs": runs,
                    }
                )
    out = Path(args.out or f"benchmarks/results/search_regret_{args.grid.stem}.json")
    write_json(
        out,
        {
            "grid": str(args.grid),
            "space": str(args.space),
            "candidates": len(grid),
            "machine": machine(),
            "command": "python benchmarks/search_regret.py " + " ".join(argv or sys.argv[1:]),
            "results": results,
        },
    )
    print(f"grid {args.grid} over the {len(grid)} configurations of {args.space}\n")
    print(markdown(results))
    return 0


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| budget | sampler | best within budget | mean regret | max regret | violations | "
        "trials (pruned) | answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = r["runs"]
        answers = sorted(
            {
                "baseline"
                if Candidate(sparsity=x["answer"]["sparsity"], mux=x["answer"]["mux"]).is_baseline
                else f"s={x['answer']['sparsity']:g} N={x['answer']['mux']}"
                for x in runs
            }
        )
        pruned = statistics.mean(x["pruned"] for x in runs)
        lines.append(
            f"| {r['budget']:g} | {r['sampler']} | {r['best_speedup']:.2f}x | "
            f"{r['regret_mean']:.1%} | {r['regret_max']:.1%} | {r['violations']}/{len(runs)} | "
            f"{r['trials']} ({pruned:.1f}) | {', '.join(answers)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
