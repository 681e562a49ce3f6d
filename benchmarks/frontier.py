"""The frontier: the fastest configuration within each accuracy budget, over sparsity x N x
precision, against a baseline fine-tuned as long as the candidates.

    python benchmarks/frontier.py --task sst2 --sparsities 0 0.3 0.5 0.6 0.7 0.8 0.9 \
        --mux 1 2 --precision fp32 int8

Points are built and measured by benchmarks/reference_grid.py into
benchmarks/results/frontier_<task>_<device>.json (resumable: a point already there is not
measured again). The file then gets
- `best_within`: for each budget ("0.5", "1", "2", "3", "5" points) the fastest point whose
  validation loss is within it (chosen on the split carved from train; its `speedup`, its dev
  `loss` as reported, its `validation_loss` and configuration; the baseline, 1.00x, when none
  is); `best_within_on_dev` the same read on dev after looking (what the measured points hold,
  not an answer);
- `references` at each budget: int8 of the baseline alone, pruning alone (N=1, fp32) and
  multiplexing alone (sparsity 0, fp32), each the fastest of its kind within the budget;
- `pareto`: the points no other point beats in both loss and speed.
and a PNG of the front beside it. `--report` only re-derives these from the measured points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import reference_grid
from _results import write_json

from autoprumux._selection import (
    DEV,
    SELECTION_STANDARD_ERRORS,
    VALIDATION,
    PathPoint,
    RecordedLosses,
    pooled_selection_losses,
    selection_loss,
)

BUDGETS = ("0.5", "1", "2", "3", "5")
REFERENCES = {
    "int8 of the baseline": lambda r: (
        r["target_sparsity"] == 0 and r["n"] == 1 and _precision(r) == "int8"
    ),
    "pruning alone": lambda r: r["n"] == 1 and _precision(r) == "fp32",
    "multiplexing alone": lambda r: r["target_sparsity"] == 0 and _precision(r) == "fp32",
}


def _precision(row: dict) -> str:
    return reference_grid.point(row)[2]


def _is_baseline(row: dict) -> bool:
    return reference_grid.point(row)[:3] == (0, 1, "fp32")


def _label(row: dict) -> str:
    return reference_grid.label(row)


def row_kind(row: dict) -> tuple:
    """What a row shares with the rows it is a sparser or denser version of: all of its point
    but its sparsity, and the run it came from (a file that joins runs names each row's
    `source`)."""
    return (*reference_grid.point(row)[1:], row.get("source"))


def chosen_losses(
    rows: list[dict], pooled: bool = True, standard_errors: float = SELECTION_STANDARD_ERRORS
) -> list[float]:
    """The loss each row is chosen on: its validation loss (a split carved from train), pooled
    along sparsity within its precision and width as the service's answer reads it
    (`autoprumux._selection.pooled_selection_losses`; per row when not `pooled`; rows of
    different runs, told apart by a `source` field, are not pooled together), plus
    `standard_errors` of its standard error; or its dev loss for rows measured without a split
    (their answer is then chosen on dev and says so)."""
    if not pooled:
        return [
            selection_loss(
                r["accuracy_loss"],
                r.get("validation_loss"),
                r.get("validation_loss_se"),
                standard_errors,
            )
            for r in rows
        ]
    points = [
        PathPoint(
            row_kind(r),
            r["target_sparsity"],
            RecordedLosses(
                r["accuracy_loss"],
                r.get("validation_loss"),
                DEV if r.get("validation_loss") is None else VALIDATION,
                r.get("validation_loss_se"),
            ),
        )
        for r in rows
    ]
    return pooled_selection_losses(points, standard_errors)


def candidates_within(
    rows: list[dict],
    budget: float,
    pooled: bool = True,
    standard_errors: float = SELECTION_STANDARD_ERRORS,
) -> list[dict]:
    """The rows an answer may choose within `budget` (`chosen_losses`): faster than the fp32
    baseline, and not the baseline's own row (timed against itself)."""
    losses = chosen_losses(rows, pooled, standard_errors)
    return [
        r
        for r, loss in zip(rows, losses, strict=True)
        if loss <= budget and r["speedup"] > 1.0 and not _is_baseline(r)
    ]


def fastest_within(rows: list[dict], budget: float, **rule: Any) -> dict:
    """The fastest row whose loss is within `budget` on validation (`candidates_within`, with
    `rule` its pooling and margin; the baseline, 1.00x, when none is). `loss` is its dev loss:
    what a user should expect, reported and never chosen on."""
    ok = candidates_within(rows, budget, **rule)
    if not ok:
        return {"speedup": 1.0, "loss": 0.0, "validation_loss": 0.0, "config": "baseline"}
    r = max(ok, key=lambda r: r["speedup"])
    return {
        "speedup": r["speedup"],
        "loss": r["accuracy_loss"],
        "validation_loss": r.get("validation_loss"),
        "validation_loss_se": r.get("validation_loss_se"),
        "chosen_on": "dev" if r.get("validation_loss") is None else "validation",
        "config": _label(r),
    }


def pareto(rows: list[dict]) -> list[dict]:
    front = [
        r
        for r in rows
        if not any(
            o["accuracy_loss"] <= r["accuracy_loss"]
            and o["speedup"] >= r["speedup"]
            and (o["accuracy_loss"] < r["accuracy_loss"] or o["speedup"] > r["speedup"])
            for o in rows
        )
    ]
    return sorted(front, key=lambda r: r["accuracy_loss"])


def summarise(data: dict) -> dict:
    rows = data["rows"]
    data["best_within"] = {b: fastest_within(rows, float(b)) for b in BUDGETS}
    # the same read on dev, after looking: what the measured points hold, never an answer
    on_dev = [{k: v for k, v in r.items() if k != "validation_loss"} for r in rows]
    data["best_within_on_dev"] = {b: fastest_within(on_dev, float(b)) for b in BUDGETS}
    int8_base = [r for r in rows if REFERENCES["int8 of the baseline"](r)]
    data["references"] = {
        name: {b: fastest_within([r for r in rows if keep(r)], float(b)) for b in BUDGETS}
        for name, keep in REFERENCES.items()
    }
    if int8_base:  # the point itself, whatever its loss
        r = int8_base[0]
        data["int8_baseline"] = {"speedup": r["speedup"], "loss": r["accuracy_loss"]}
    data["pareto"] = [
        {"config": _label(r), "loss": r["accuracy_loss"], "speedup": r["speedup"]}
        for r in pareto([r for r in rows if not _is_baseline(r)])
    ]
    return data


def table(data: dict) -> str:
    head = "| budget (points) | frontier | on dev | " + " | ".join(REFERENCES) + " |"
    lines = [head, "|" + "---|" * (3 + len(REFERENCES))]
    for b in BUDGETS:
        best = data["best_within"][b]
        v = best.get("validation_loss")
        chosen = "" if v is None else f"; validation {v:.2f}"
        cells = [f"{best['speedup']:.2f}x at {best['loss']:.2f} dev{chosen} ({best['config']})"]
        dev = data["best_within_on_dev"][b]
        cells.append(f"{dev['speedup']:.2f}x at {dev['loss']:.2f} ({dev['config']})")
        for name in REFERENCES:
            ref = data["references"][name][b]
            cells.append(f"{ref['speedup']:.2f}x ({ref['config']})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(data: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for precision, marker in (("fp32", "o"), ("int8", "s"), ("bf16", "^"), ("fp16", "v")):
        pts = [r for r in data["rows"] if _precision(r) == precision]
        if pts:
            ax.scatter(
                [r["accuracy_loss"] for r in pts],
                [r["speedup"] for r in pts],
                marker=marker,
                alpha=0.6,
                label=precision,
            )
    front = data["pareto"]
    ax.plot(
        [p["loss"] for p in front], [p["speedup"] for p in front], "-", color="C3", label="front"
    )
    for b in BUDGETS:
        ax.axvline(float(b), color="gray", lw=0.5, ls=":")
    ax.set_xlabel("accuracy loss (points)")
    ax.set_ylabel("speedup over the fp32 baseline (x)")
    ax.set_title(f"{data['task']}, {data['device']}: speedup against accuracy loss")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", action="store_true", help="only summarise the measured points")
    args, grid_args = ap.parse_known_args(argv)
    out = Path(args.out or f"benchmarks/results/frontier_{args.task}_{args.device}.json")
    if not args.report:
        rc = reference_grid.main(
            [*grid_args, "--task", args.task, "--device", args.device, "--out", str(out)]
        )
        if rc:
            return rc
    if not out.is_file():
        print(f"no measured points in {out}; run without --report first", file=sys.stderr)
        return 2
    data = summarise(json.loads(out.read_text()))
    write_json(out, data)
    figure(data, out.with_suffix(".png"))
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
