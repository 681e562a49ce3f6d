"""How far to trust an answer: for measured frontier files, which configuration each selection
rule answers within each budget, and whether its dev loss is over the budget.

    python benchmarks/answer_trust.py benchmarks/results/path_time_sst2_emr.json ... \
        --out benchmarks/results/answer_trust_sst2.json

A rule reads a row's held-out loss plus `margin` of its paired standard errors (the product's
rule is margin 1, `autoprumux._selection`), either per row ("raw") or pooled along a pruning
path ("pooled": an isotonic, non-decreasing fit of the held-out losses over sparsity, weighted
by 1 / SE^2, within each precision and width: a deeper snapshot of one path holds less of the
same model, so a dip in its held-out loss is read as the split's luck, not as a gain), or
"monotone" (a row is within only when every sparser row of its kind is within too). Dev only
reports: an answer is *over* when its dev loss exceeds the budget, and *clearly over* when it
exceeds the budget by more than dev's own paired SE (dev is one draw of about 1 point's noise,
so an answer at the budget reads over on dev about half the time).

Counts are per file; a file is one machine's measurements and is never pooled with another's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from _results import write_json
from frontier import BUDGETS, _is_baseline, _label
from reference_grid import point
from sklearn.isotonic import IsotonicRegression

RULES = ("raw", "pooled", "monotone")  # see the module docstring
MIN_SE = 0.1  # a row whose SE reads 0 (it predicts as the baseline does) still gets a weight


def _group(row: dict) -> tuple:
    """What a row shares with the rows it is a sparser or denser version of: all of its point
    but its sparsity."""
    return point(row)[1:]


def pooled_losses(rows: list[dict]) -> list[float | None]:
    """Each row's held-out loss, fitted non-decreasing in sparsity within its precision and
    width (rows without a held-out loss keep None)."""
    out: list[float | None] = [r.get("validation_loss") for r in rows]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.get("validation_loss") is not None:
            groups[_group(r)].append(i)
    for idx in groups.values():
        idx.sort(key=lambda i: rows[i]["target_sparsity"])
        x = [rows[i]["target_sparsity"] for i in idx]
        y = [rows[i]["validation_loss"] for i in idx]
        w = [1.0 / max(rows[i].get("validation_loss_se") or 0.0, MIN_SE) ** 2 for i in idx]
        for i, v in zip(
            idx, IsotonicRegression().fit(x, y, sample_weight=w).predict(x), strict=True
        ):
            out[i] = float(v)
    return out


def answers(rows: list[dict], rule: str, margin: float) -> dict[str, dict]:
    """Per budget: the fastest row (not the fp32 baseline, faster than it) whose rule loss plus
    `margin` SEs is within the budget, with its dev loss and whether that is over."""
    losses = pooled_losses(rows) if rule == "pooled" else [r.get("validation_loss") for r in rows]
    out = {}
    for b in BUDGETS:
        budget = float(b)
        passes = [
            loss is not None and loss + margin * (r.get("validation_loss_se") or 0.0) <= budget
            for r, loss in zip(rows, losses, strict=True)
        ]
        if rule == "monotone":
            passes = [
                ok
                and all(
                    passes[j]
                    for j, o in enumerate(rows)
                    if _group(o) == _group(r)
                    and o["target_sparsity"] < r["target_sparsity"]
                    and o.get("validation_loss") is not None
                )
                for r, ok in zip(rows, passes, strict=True)
            ]
        ok = [
            r
            for r, p in zip(rows, passes, strict=True)
            if p and r["speedup"] > 1.0 and not _is_baseline(r)
        ]
        if not ok:
            out[b] = {
                "config": "baseline",
                "speedup": 1.0,
                "dev_loss": 0.0,
                "over": False,
                "clearly_over": False,
            }
            continue
        r = max(ok, key=lambda r: r["speedup"])
        dev, dev_se = r["accuracy_loss"], r.get("accuracy_loss_se") or 0.0
        out[b] = {
            "config": _label(r),
            "speedup": r["speedup"],
            "dev_loss": dev,
            "dev_loss_se": dev_se,
            "over": dev > budget,
            "clearly_over": dev > budget + dev_se,
        }
    return out


def trust(path: Path, margins: list[float]) -> dict:
    rows = json.loads(path.read_text())["rows"]
    by_rule = {}
    for rule in RULES:
        for margin in margins:
            got = answers(rows, rule, margin)
            by_rule[f"{rule}, {margin:g} SE"] = {
                "answers": got,
                "over": sum(a["over"] for a in got.values()),
                "clearly_over": sum(a["clearly_over"] for a in got.values()),
                "speedups": [round(got[b]["speedup"], 2) for b in BUDGETS],
            }
    return {"file": path.name, "machine": rows[0].get("machine"), "rules": by_rule}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="frontier JSON files (frontier.py --out)")
    ap.add_argument("--margins", nargs="+", type=float, default=[1.0, 2.0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(
            f"no such frontier file: {', '.join(missing)}; run benchmarks/frontier.py first",
            file=sys.stderr,
        )
        return 2
    results = [trust(f, args.margins) for f in args.files]
    for res in results:
        print(res["file"])
        for name, r in res["rules"].items():
            print(
                f"  {name:14s} over {r['over']} of {len(BUDGETS)}, clearly {r['clearly_over']}:"
                f" {' / '.join(f'{s:.2f}x' for s in r['speedups'])}"
            )
    if args.out:
        write_json(args.out, {"budgets": list(BUDGETS), "files": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
