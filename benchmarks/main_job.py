"""The README's main job, run as a new user runs it: its wall time and its answer.

Runs the README's search command in WORKDIR (a fresh clone whose `.venv` is installed), timed,
then reads the study it left in WORKDIR/autoprumux.db: every trial's configuration, loss and
speedup, and the answer within the budget.

    git clone <repo> /tmp/fresh && cd /tmp/fresh && python3 -m venv .venv \
        && .venv/bin/pip install torch==2.13.0 -e '.[dev]'
    python benchmarks/main_job.py --workdir /tmp/fresh

`--seconds S` records a run already made there (timed by the caller) instead of running it.
Arguments after `--` are added to the command, e.g. `-- --task mrpc` or `-- --data DIR` (a
task of the user's own, see benchmarks/multiclass_csv.py).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from _results import write_json

COMMAND = [
    "search", "--space", "search_spaces/quick.yaml", "--sampler", "guided", "--trials", "5",
    "--budget", "2", "--export", "sst2-model",
]  # fmt: skip
BUDGET = 2.0


def study_record(workdir: Path) -> tuple[str, list[dict], dict | None]:
    """The machine the study recorded (its own run, not this process), its trials, and the
    configuration `recommend` answers within the budget (None: the baseline), as the job
    printed it."""
    import optuna

    from autoprumux.evaluation import Machine
    from autoprumux.meta import recommend
    from autoprumux.meta._recommend import with_losses

    storage = f"sqlite:///{workdir / 'autoprumux.db'}"
    # the newest study: a clone that ran the job on two tasks holds both
    summary = max(optuna.get_all_study_summaries(storage))  # ordered by creation
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    measured_on = Machine.from_dict(study.user_attrs["machine"]).describe()
    rec = recommend(BUDGET, storage=storage, study=summary.study_name)
    answer = None if rec.candidate.is_baseline else rec.candidate.to_dict()

    return (
        measured_on,
        [
            {
                "number": t.number,
                "state": t.state.name,
                "config": t.user_attrs.get("config"),
                # both losses, and the one the search chose on (validation; dev without a split)
                **(with_losses(t.user_attrs, {}) if t.state.name == "COMPLETE" else {}),
                "speedup": t.value,
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete
                else None,
            }
            for t in study.get_trials()
        ],
        answer,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--out", default="benchmarks/results/main_job_sst2_cpu.json")
    ap.add_argument("extra", nargs="*", help="added to the search command (after --)")
    args = ap.parse_args()
    command = [*COMMAND, *args.extra]
    workdir = args.workdir.resolve()
    seconds = args.seconds
    if seconds is None:
        start = time.perf_counter()
        subprocess.run([str(workdir / ".venv/bin/autoprumux"), *command], cwd=workdir, check=True)
        seconds = time.perf_counter() - start
    measured_on, trials, answer_config = study_record(workdir)
    done = [t for t in trials if t["state"] == "COMPLETE"]
    # the trial that measured what the job answered (`recommend`, as it printed it)
    answer = next((t for t in done if t["config"] == answer_config), None)
    doc = {
        "command": "autoprumux " + " ".join(command),
        "machine": measured_on,
        "wall_seconds": round(seconds, 1),
        "budget": BUDGET,
        "answer": answer,
        "trials": done,
    }
    print(write_json(args.out, doc))


if __name__ == "__main__":
    main()
