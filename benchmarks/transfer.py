"""Does what earlier studies learned carry over to a new task? Regret and violations of the
guided search after a few evaluations, with and without earlier tasks' trials as its prior.

    python benchmarks/transfer.py \
        --prior benchmarks/results/reference_grid_sst2_cpu.json \
                benchmarks/results/reference_grid_mrpc_cpu.json \
        --targets benchmarks/results/reference_grid_cola_cpu.json \
                  benchmarks/results/reference_grid_qnli_cpu.json \
        --evaluations 2 3 4 --budgets 1 2 3 5

Every search is the real service (`Searcher`, a real SQLite Optuna study and MLflow store), with
only each trial's evaluation replayed from a measured reference grid (as in
benchmarks/search_regret.py). First each `--prior` grid becomes a finished study: one trial per
measured N=1 fp32 point. Then, for each target grid, budget and number of evaluations, a guided
search of the target task (N=1, sparsity from 0 to the grid's highest in steps of 0.05, points
between measured ones interpolated) runs once on its own and once with `--prior` naming those studies (the
meta-model fitted on their trials in their own contexts: task descriptors, baseline metric).
The answer is `recommend()` on the target study alone. Regret = 1 - (grid speedup of the answer) /
(the best grid speedup within the budget); a violation is an answer whose grid loss exceeds the
budget. JSON: benchmarks/results/transfer_<device>.json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _results import machine, write_json
from search_regret import GridTable, ReplayEvaluator, dataset_sizes

from autoprumux.config import Recipe
from autoprumux.meta import recommend
from autoprumux.search import Searcher, SearchSettings, SearchSpace

SPARSITY_STEP = 0.05


def grid_recipe(path: Path) -> Recipe:
    import json

    return Recipe(**json.loads(path.read_text()).get("recipe", {}))


def space_for(table: GridTable, recipe: Recipe, sparsity: dict[str, Any]) -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "name": "transfer",
            "task": table.task,
            "model": None,
            "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
            "params": {"sparsity": sparsity, "mux": {"choices": [1]}},
        }
    )


def evaluator_for(table: GridTable, recipe: Recipe) -> ReplayEvaluator:
    dev, train, held = dataset_sizes(recipe, table.task)
    return ReplayEvaluator(
        table, dev, train, recipe.prune_stages, recipe=recipe, validation_size=held
    )


def settings(work: Path, space: SearchSpace, name: str, **kw: Any) -> SearchSettings:
    return SearchSettings(
        space=space,
        storage=f"sqlite:///{work / 'optuna.db'}",
        study_name=name,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        show_progress=False,
        **kw,
    )


def make_prior_study(work: Path, path: Path) -> str:
    """A finished study holding one trial per measured N=1 fp32 point of the grid at `path`."""
    table = GridTable(path)
    recipe = grid_recipe(path)
    measured = sorted(s for s, _, _ in table.rows[1] if s > 0)
    space = space_for(table, recipe, {"choices": measured})
    name = f"prior-{table.task}"
    s = settings(work, space, name, trials=len(measured), sampler="grid")
    Searcher(s, evaluator=lambda variant: evaluator_for(table, recipe)).run()
    return name


def search_target(
    work: Path, path: Path, budget: float, evaluations: int, prior: tuple[str, ...]
) -> dict[str, Any]:
    table = GridTable(path)
    recipe = grid_recipe(path)
    evaluator = evaluator_for(table, recipe)
    top = max(sp for sp, _, _ in table.rows[1])  # the space stays inside the measured grid
    space = space_for(table, recipe, {"low": 0.0, "high": top, "step": SPARSITY_STEP})
    name = f"{table.task}-b{budget:g}-e{evaluations}-{'prior' if prior else 'alone'}"
    s = settings(
        work, space, name, trials=evaluations, sampler="guided", budget=budget, prior=prior
    )
    Searcher(s, evaluator=lambda variant: evaluator).run()
    rec = recommend(budget, storage=s.storage, study=name)
    loss, speed = table.at(rec.sparsity, 1)
    points = [table.at(c.sparsity, 1) for c in space.grid()]
    best = max(sp for loss_, sp in points if loss_ <= budget)
    return {
        "task": table.task,
        "budget": budget,
        "evaluations": evaluations,
        "prior": list(prior),
        "answer_sparsity": rec.sparsity,
        "grid_loss": loss,
        "grid_speedup": speed,
        "best_speedup": best,
        "regret": 1.0 - speed / best,
        "violation": loss > budget + 1e-9,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prior", type=Path, nargs="+", required=True)
    ap.add_argument("--targets", type=Path, nargs="+", required=True)
    ap.add_argument("--evaluations", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    for p in [*args.prior, *args.targets]:
        if not p.is_file():
            print(
                f"grid {p} does not exist; measure it with benchmarks/reference_grid.py",
                file=sys.stderr,
            )
            return 2
    logging.getLogger("autoprumux").setLevel(logging.ERROR)

    rows = []
    with tempfile.TemporaryDirectory(prefix="transfer-") as d:
        work = Path(d)
        prior = tuple(make_prior_study(work, p) for p in args.prior)
        for target in args.targets:
            for budget in args.budgets:
                for k in args.evaluations:
                    for use in ((), prior):
                        r = search_target(work, target, budget, k, use)
                        rows.append(r)
                        print(
                            f"{r['task']} budget {budget:g}, {k} evaluations, "
                            f"{'with' if use else 'without'} prior: s={r['answer_sparsity']:g} "
                            f"({r['grid_speedup']:.2f}x at {r['grid_loss']:.2f}; best "
                            f"{r['best_speedup']:.2f}x) regret {r['regret']:.1%}"
                            f"{' VIOLATION' if r['violation'] else ''}",
                            file=sys.stderr,
                            flush=True,
                        )
    summary = summarise(rows)
    out = Path(args.out or f"benchmarks/results/transfer_{GridTable(args.targets[0]).device}.json")
    write_json(
        out,
        {
            "prior": [str(p) for p in args.prior],
            "targets": [str(p) for p in args.targets],
            "machine": machine(),
            "command": "python benchmarks/transfer.py " + " ".join(argv or sys.argv[1:]),
            "summary": summary,
            "runs": rows,
        },
    )
    print(markdown(summary))
    return 0


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and max regret and the violations per (evaluations, with or without the prior),
    over the targets and budgets."""
    out = []
    for k in sorted({r["evaluations"] for r in rows}):
        for with_prior in (False, True):
            group = [r for r in rows if r["evaluations"] == k and bool(r["prior"]) == with_prior]
            out.append(
                {
                    "evaluations": k,
                    "prior": with_prior,
                    "regret_mean": statistics.mean(r["regret"] for r in group),
                    "regret_max": max(r["regret"] for r in group),
                    "violations": sum(r["violation"] for r in group),
                    "searches": len(group),
                }
            )
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| evaluations | prior | mean regret | max regret | violations |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['evaluations']} | {'yes' if s['prior'] else 'no'} | {s['regret_mean']:.1%} | "
            f"{s['regret_max']:.1%} | {s['violations']} of {s['searches']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
