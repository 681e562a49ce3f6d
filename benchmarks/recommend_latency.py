"""How long `autoprumux recommend` takes on a study of `--trials` finished trials.

    python benchmarks/recommend_latency.py --grid benchmarks/results/reference_grid_sst2_cpu.json \
        --trials 30 --repeats 5

Builds a real study (SQLite Optuna + MLflow) with the random sampler over the CLI's search space,
each trial's evaluation replayed from the reference grid (see search_regret.py), then times
`recommend()` in process and the `autoprumux recommend` command in a fresh process (imports
included), `--repeats` times each; the median is reported. JSON to
benchmarks/results/recommend_latency_<trials>.json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import machine, write_json
from search_regret import GridTable, ReplayEvaluator, dataset_sizes

from autoprumux.meta import recommend
from autoprumux.search import Searcher, SearchSettings, SearchSpace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", required=True, type=Path)
    ap.add_argument("--space", type=Path, default=Path("search_spaces/prumux.yaml"))
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.getLogger("autoprumux").setLevel(logging.ERROR)

    table = GridTable(args.grid)
    space = SearchSpace.from_yaml(args.space).with_task(table.task)
    dev, train, held = dataset_sizes(space.recipe, table.task)
    evaluator = ReplayEvaluator(
        table, dev, train, space.recipe.prune_stages, recipe=space.recipe, validation_size=held
    )
    with tempfile.TemporaryDirectory(prefix="recommend-latency-") as d:
        work = Path(d)
        storage = f"sqlite:///{work / 'optuna.db'}"
        settings = SearchSettings(
            space=space,
            trials=args.trials,
            storage=storage,
            study_name="latency",
            tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            budget=args.budget,
            sampler="random",
            prune_margin=100.0,  # every trial finishes: the meta-model sees all of them
            show_progress=False,
        )
        Searcher(settings, evaluator=lambda variant: evaluator).run()
        in_process = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rec = recommend(args.budget, storage=storage)
            in_process.append(time.perf_counter() - t0)
        cli = []
        cmd = [sys.executable, "-m", "autoprumux.cli", "recommend", "--budget", str(args.budget)]
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([*cmd, "--storage", storage], check=True, capture_output=True)
            cli.append(time.perf_counter() - t0)
    doc = {
        "trials": rec.trials_used,
        "in_process_seconds_median": statistics.median(in_process),
        "cli_seconds_median": statistics.median(cli),
        "in_process_seconds": in_process,
        "cli_seconds": cli,
        "machine": machine(),
        "command": "python benchmarks/recommend_latency.py " + " ".join(argv or sys.argv[1:]),
    }
    out = Path(args.out or f"benchmarks/results/recommend_latency_{args.trials}.json")
    write_json(out, doc)
    print(
        f"recommend on {rec.trials_used} trials: {doc['in_process_seconds_median']:.2f} s in "
        f"process, {doc['cli_seconds_median']:.2f} s as `autoprumux recommend` (median of "
        f"{args.repeats})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
