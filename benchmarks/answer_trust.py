"""How far to trust an answer: for measured frontier files, which configuration each selection
rule answers within each budget, and whether its dev loss is over the budget.

    python benchmarks/answer_trust.py benchmarks/results/path_time_sst2_emr.json ... \
        --out benchmarks/results/answer_trust_sst2.json

A rule reads a row's held-out loss plus `margin` of its paired standard errors, either per row
("raw") or pooled along sparsity ("pooled": an isotonic, non-decreasing fit of the held-out
losses over sparsity, weighted by 1 / SE^2, within each precision and width: a deeper snapshot
of one path holds less of the same model, so a dip in its held-out loss is read as the split's
luck, not as a gain), or "monotone" (a row is within only when every denser row of its kind is
within too). The service answers with "pooled, 1 SE" (`autoprumux._selection`); the rules come
from frontier.py's `candidates_within`, which reads the service's functions. Dev only
reports: an answer is *over* when its dev loss exceeds the budget, and *clearly over* when it
exceeds the budget by more than dev's own paired SE (dev is one draw of about 1 point's noise,
so an answer at the budget reads over on dev about half the time).

Counts are per file; a file is one machine's measurements and is never pooled with another's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _results import write_json
from frontier import BUDGETS, _label, candidates_within, chosen_losses, row_kind

RULES = ("raw", "pooled", "monotone")  # see the module docstring


def within(rows: list[dict], rule: str, margin: float, budget: float) -> list[dict]:
    """The rows `rule` with `margin` SEs may answer within `budget`."""
    if rule != "monotone":
        return candidates_within(rows, budget, pooled=rule == "pooled", standard_errors=margin)
    ok = candidates_within(rows, budget, pooled=False, standard_errors=margin)
    raw = chosen_losses(rows, pooled=False, standard_errors=margin)
    over = [
        (row_kind(o), o["target_sparsity"])
        for o, loss in zip(rows, raw, strict=True)
        if o.get("validation_loss") is not None and loss > budget
    ]
    return [
        r for r in ok if not any(g == row_kind(r) and s < r["target_sparsity"] for g, s in over)
    ]


def answers(rows: list[dict], rule: str, margin: float) -> dict[str, dict]:
    """Per budget: the fastest row `rule` allows (`within`), with its dev loss and whether that
    is over."""
    out = {}
    for b in BUDGETS:
        budget = float(b)
        ok = within(rows, rule, margin, budget)
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
